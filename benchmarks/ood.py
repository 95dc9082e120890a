"""Out-of-distribution detection by every method of a `dgc bench` folder, per novel set.

For each finished run (its `best.pt`): AUROC, AUPR and FPR at 95 % TPR of each novelty score
(`dgc.ood`: msp and energy for every method; evidence, recon and latent for DGC), the run's test
set against each novel set (`dgc evaluate RUN --ood SOURCES [--ood-limit N]`, which also
writes the run's ood-<sources>[-n<N>].json). `--limit N` scores a fixed random N images of each
set: DGC's exact scores of the whole test set and four novel sets take ~40 min a run on one
CPU thread. `heldout` needs a benchmark trained with `--set train.held_out=[8,9]`. Writes
`ood.json` and `ood.md` into OUT: per novel set, mean ± std over seeds per method and score, and
paired t-tests of each of `dgc`'s scores against the baseline score with the best mean AUROC.

    python benchmarks/ood.py runs/bench-fashion-cpu --sources digits,inverted,noise,blur \\
        --out runs/capabilities-fashion
    python benchmarks/ood.py runs/bench-fashion-heldout --sources heldout \\
        --out runs/capabilities-fashion-heldout
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dgc.capabilities import (
    DETECTION,
    REFERENCE,
    bench_parser,
    builtin_sources,
    evaluate_bench,
    evaluate_ood,
    ood_file,
    parse_sources,
    run_script,
    write_tables,
)
from dgc.config import flatten
from dgc.errors import DGCError


def best_baseline(runs: list[dict[str, Any]], rows: list[str], source: str) -> str | None:
    """The row of another method with the highest mean AUROC on `source`."""
    means: dict[str, float] = {}
    for row in rows:
        if not row.startswith(f"{REFERENCE}/"):
            scores = [r["metrics"][f"{source}.auroc"] for r in runs if r["method"] == row]
            means[row] = sum(scores) / len(scores)
    return max(means, key=lambda row: means[row]) if means else None


def tabulate(args: argparse.Namespace) -> Path:
    sources = parse_sources(args.sources)
    if args.limit is not None and args.limit < 1:
        raise DGCError(f"--limit {args.limit}: give a positive number of images")
    reports = evaluate_bench(
        args.bench, lambda run_dir, run: evaluate_ood(
            run_dir, builtin_sources(run, sources), run, limit=args.limit)[0], "ood",
        ood_file(sources, limit=args.limit), args.recompute)
    runs = [{"method": f"{method}/{score}", "seed": seed,
             "metrics": flatten({source: report["sources"][source][score]
                                 for source in sources})}
            for method, seed, report in reports for score in report["scores"]]
    rows = list(dict.fromkeys(str(run["method"]) for run in runs))
    sections = []
    for source in sources:
        best = best_baseline(runs, rows, source)
        pairs = [(row, best) for row in rows if row.startswith(f"{REFERENCE}/") and best]
        sections.append({"heading": f"Novel set: {source}", "rows": rows, "pairs": pairs,
                         "columns": [(f"{source}.{key}", label) for key, label in DETECTION],
                         "lower": [f"{source}.fpr95"]})
    return write_tables(args.out or args.bench, "ood", f"Novel images flagged: {args.bench}",
                        ["Rows are method/score; the novel images are the positives. Higher "
                         "AUROC and AUPR, lower FPR@95TPR are better. The differences test "
                         f"each `{REFERENCE}` score against the baseline score of best mean "
                         "AUROC.", "Images scored per run: "
                         + ("all of the test set and of each novel set." if args.limit is None
                            else f"the same fixed random {args.limit} of the test set and of "
                                 "each novel set (all of a smaller set).")], sections, runs)


if __name__ == "__main__":
    parser = bench_parser(__doc__)
    parser.add_argument("--sources", default="digits,inverted,noise,blur",
                        help="comma-separated novel sets (default digits,inverted,noise,blur)")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="a fixed random N images of the test set and of each novel set, "
                             "the same for every run (default: all)")
    run_script("ood", tabulate, parser)
