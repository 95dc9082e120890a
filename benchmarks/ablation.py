"""Ablation from `dgc-faithful` to `dgc`, one change at a time, over a benchmark's seeds.

Each step adds one change to the step before it; the last step's settings are exactly `dgc`'s.
The first and last rows are the benchmark's own `dgc-faithful` and `dgc` runs, read from
`--bench` and never retrained; the steps between train into `OUT/<k>-<step>/` like `dgc bench`
(a finished run is kept, an unfinished one resumes). The extra encoder step (LVO) goes first
because it doubles the cost of a training step: the steps after it train at `dgc`'s speed.
Writes `ablation.json` and `ablation.md` (mean ± std over seeds; the mean change in ACSA and a
paired t-test against the step before, over the seeds both finished) into OUT.

    python benchmarks/ablation.py --exp fashion --seeds 1-3 --exact --threads 1 \\
        --bench runs/bench-fashion-cpu --out runs/ablation-fashion-cpu
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dgc.benchmark import (
    TABLE2,
    TABLE3,
    bench_config,
    markdown,
    paired_p_value,
    parse_seeds,
    summary_rows,
)
from dgc.cli import option_settings
from dgc.config import RunConfig
from dgc.errors import DGCError
from dgc.experiment import train_run
from dgc.io import write_json, write_text
from dgc.rundir import RunDir
from dgc.series import check_finished, mean_std, number

# (name, what changes, the `--set` overrides it adds to the step before).
STEPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("faithful", "`dgc-faithful` (the paper, read from the released code)", ()),
    ("paper-reading", "the paper's encoder: ReLU after its hidden layer, N(0, 0.01²) init",
     ("model.encoder_relu=true", 'model.init="paper"')),
    ("no-lvo", "without the extra encoder step (LVO)", ("train.lvo=false",)),
    ("logit-adjust", "+ logit-adjusted label head, τ = 1", ("train.logit_adjust_tau=1",)),
    ("x-mean", "+ encoder mean from the image only", ("model.label_in_mean=false",)),
    ("lr", "+ lr 1e-3, gradients clipped at 5 (= `dgc`)", ("train.lr=0.001", "train.grad_clip=5")),
)
COLUMNS = (*TABLE2, *TABLE3)


def step_overrides(k: int) -> list[str]:
    """The overrides of steps 1..k together, applied on top of `dgc-faithful`."""
    return [item for _, _, changes in STEPS[1:k + 1] for item in changes]


def step_config(k: int, exp: str, seed: int, bench: Path, out: Path, base: list[str],
                **settings: Any) -> RunConfig:
    """Step k's run: the benchmark's own `dgc-faithful` / `dgc` run at either end, else
    `dgc-faithful` with the overrides of steps 1..k in OUT/<k>-<name>/, trained under `dgc`'s
    schedule (they differ only with the recipe off, where `dgc-faithful` keeps the released
    code's reading of the preset's schedule)."""
    if k == 0:
        return bench_config(exp, "dgc-faithful", seed, bench, overrides=base, **settings)
    last = bench_config(exp, "dgc", seed, bench, overrides=base, **settings)
    if k == len(STEPS) - 1:
        return last
    schedule = f'train.schedule="{last.train.schedule}"'
    return bench_config(exp, "dgc-faithful", seed, out / f"{k}-{STEPS[k][0]}",
                        overrides=[*base, schedule, *step_overrides(k)], **settings)


def table(rows: list[dict[str, Any]], seeds: list[int]) -> str:
    header = ["step", "change", "seeds", *(title for _, title in COLUMNS),
              "Δ ACSA (paired)", "p (ACSA, vs step before)"]
    cells = []
    for k, row in enumerate(rows):
        _, *stats = summary_rows({row["step"]: row["summary"]}, COLUMNS, ranked=False)[0]
        delta = row.get("delta_acsa")
        cells.append([str(k), row["change"], *stats, "" if delta is None else f"{delta:+.4f}",
                      number(row.get("p_acsa"), ".3g") if k else ""])
    lines = [f"Ablation over seeds {', '.join(map(str, seeds))}: mean ± std (ddof = 1).", ""]
    return "\n".join(lines + markdown(header, cells)) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exp", default="fashion")
    parser.add_argument("--seeds", default="1-3")
    parser.add_argument("--preset", default="cpu", choices=("cpu", "paper"))
    parser.add_argument("--recipe", default="on", choices=("on", "off"))
    parser.add_argument("--bench", required=True, help="the benchmark folder with "
                        "dgc-faithful-s<seed> and dgc-s<seed>")
    parser.add_argument("--out", required=True, help="folder for the steps in between")
    parser.add_argument("--steps", help="which steps between to train, e.g. 1,2 (default all)")
    parser.add_argument("--exact", action="store_true", help="as `dgc bench --exact`")
    parser.add_argument("--epochs", type=int, help="as `dgc bench --epochs`")
    parser.add_argument("--bf16", action="store_true", help="as `dgc bench --bf16`")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="as `dgc bench --set`: applied to every step, the ends included")
    parser.add_argument("--collect", action="store_true", help="train nothing; tabulate")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--data-dir")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    bench, out = Path(args.bench), Path(args.out)
    base = args.set  # with --epochs, --exact and --bf16 (the options), as `dgc bench`
    settings = {"preset": args.preset, "recipe": args.recipe == "on", "threads": args.threads,
                "data_dir": args.data_dir, "options": option_settings(args)}
    inner = range(1, len(STEPS) - 1)
    train_steps = [int(s) for s in args.steps.split(",")] if args.steps else list(inner)
    if args.collect:
        train_steps = []
    if bad := [k for k in train_steps if k not in inner]:
        raise DGCError(f"--steps {bad} is not a step between the ends; choose from {list(inner)}")
    rows: list[dict[str, Any]] = []
    missing = []
    previous: dict[int, dict[str, Any]] = {}
    for k, (name, change, changes) in enumerate(STEPS):
        metrics: dict[int, dict[str, Any]] = {}
        for seed in seeds:
            cfg = step_config(k, args.exp, seed, bench, out, base, **settings)
            run_dir = RunDir(cfg.out_dir)
            if run_dir.finished():
                check_finished(cfg)
            elif k in train_steps:
                print(f"ablation: step {k} ({name}), seed {seed}", flush=True)
                train_run(cfg, resume=run_dir.path.exists(), progress=not args.quiet)
            else:
                missing.append(str(run_dir.path))
                continue
            metrics[seed] = run_dir.metrics()
        summary = {key: mean_std([m[key] for m in metrics.values()]) for key, _ in COLUMNS}
        row: dict[str, Any] = {"step": name, "change": change, "overrides": list(changes),
               "metrics": {str(s): m for s, m in metrics.items()}, "summary": summary}
        if shared := [s for s in metrics if s in previous]:  # paired over the common seeds
            ours = [metrics[s]["acsa"] for s in shared]
            theirs = [previous[s]["acsa"] for s in shared]
            row["delta_acsa"] = (sum(ours) - sum(theirs)) / len(shared)
            row["p_acsa"] = paired_p_value(ours, theirs)
        previous = metrics
        rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "ablation.json", {"exp": args.exp, "seeds": seeds, "bench": str(bench),
                                       "exact": args.exact, "steps": rows, "missing": missing})
    markdown_table = table(rows, seeds)
    write_text(out / "ablation.md", markdown_table)
    print(markdown_table)
    if missing:
        print("not finished yet (rerun to train the steps between; run `dgc bench --methods "
              "dgc-faithful,dgc` for the ends):\n  " + "\n  ".join(missing), file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except DGCError as error:
        sys.exit(f"ablation: {error}")
