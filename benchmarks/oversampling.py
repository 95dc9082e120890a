"""DGC's generated images as an oversampler, against random oversampling and SMOTE.

Reads two `dgc bench` folders of the same seeds: BENCH (with `ros`, `smote` and the method the
generated images are given to, e.g. `logit-adjust`) and GENERATED (that method trained with
`--set baseline.resample=dgc --set 'baseline.generator=BENCH/dgc-s{seed}'`). Writes
`oversampling.json` and `oversampling.md` into OUT: the test metrics as mean ± std over seeds,
and paired t-tests of the method on generated images against each other row.

    python -m dgc bench --exp fashion --methods logit-adjust --seeds 1-5 \\
        --set baseline.resample=dgc --set 'baseline.generator=runs/bench-fashion-cpu/dgc-s{seed}' \\
        --out runs/bench-fashion-dgcgen
    python benchmarks/oversampling.py runs/bench-fashion-cpu runs/bench-fashion-dgcgen \\
        --out runs/capabilities-fashion
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dgc.benchmark import TESTED
from dgc.capabilities import bench_parser, run_script, write_tables
from dgc.io import read_json

COMPARED = ("ros", "smote")


def tabulate(args: argparse.Namespace) -> Path:
    generated = read_json(Path(args.generated) / "results.json")["runs"]
    runs = [{**run, "method": f"{run['method']}+dgc"} for run in generated]
    given = list(dict.fromkeys(run["method"] for run in runs))
    base = [run for run in read_json(Path(args.bench) / "results.json")["runs"]
            if run["method"] in COMPARED or f"{run['method']}+dgc" in given]
    runs += base
    rows = given + list(dict.fromkeys(run["method"] for run in base))
    pairs = [(ours, other) for ours in given for other in rows if other not in given]
    section = {"heading": "Test metrics", "rows": rows, "pairs": pairs, "columns": list(TESTED),
               "lower": ["ece"]}
    return write_tables(args.out or args.generated, "oversampling",
                        f"Generated minority images ({args.generated}) against {args.bench}",
                        ["`M+dgc`: method M trained on its training split grown with images "
                         "decoded from the same seed's DGC run; the other rows resample the "
                         "real images only."], [section], runs)


if __name__ == "__main__":
    parser = bench_parser(__doc__)
    parser.add_argument("generated", help="the `dgc bench` folder of baseline.resample=dgc")
    run_script("oversampling", tabulate, parser)
