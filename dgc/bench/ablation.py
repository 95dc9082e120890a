"""The ablation from `dgc-faithful` to `dgc`, one change at a time (`dgc bench --ablation`).

Each step adds one change to the step before it; the last step's settings are exactly `dgc`'s. The
first and last rows are the benchmark's own `dgc-faithful` and `dgc` runs; the steps between train
as part of the same series, into `BENCH/ablation/<k>-<step>/`, each seed's step starting from that
seed's `dgc-faithful` configuration (so with every harness setting and `--set` of the benchmark)
under `dgc`'s schedule. The extra encoder step (LVO) goes first because it doubles the cost of a
training step: the steps after it train at `dgc`'s speed. `ablation.json` and `ablation.md` hold
mean ± std over seeds and, against the step before, the mean change in ACSA with a paired t-test
over the seeds both finished."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dgc.config import RunConfig, apply_overrides, validate
from dgc.core.errors import DGCError
from dgc.core.io import write_json, write_text
from dgc.core.tables import TESTED, markdown, mean_std, number, paired_p_value, summary_rows
from dgc.run.folder import RunDir

FOLDER = "ablation"
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
ENDS = ("dgc-faithful", "dgc")


def step_overrides(k: int) -> list[str]:
    """The overrides of steps 1..k together, applied on top of `dgc-faithful`."""
    return [item for _, _, changes in STEPS[1:k + 1] for item in changes]


def ablation_runs(configs: Sequence[RunConfig], out: Path) -> dict[tuple[int, int], RunConfig]:
    """(seed, k) → the run of step k for every seed of the benchmark (see the module docstring)."""
    found = {(cfg.seed, cfg.method): cfg for cfg in configs if cfg.method in ENDS}
    seeds = sorted({seed for seed, _ in found})
    if not seeds or any((seed, method) not in found for seed in seeds for method in ENDS):
        raise DGCError("--ablation runs from `dgc-faithful` to `dgc`: give both in --methods "
                       "(or --methods all)")
    runs = {}
    for k, (name, _, _) in enumerate(STEPS):
        for seed in seeds:
            first, last = found[seed, ENDS[0]], found[seed, ENDS[1]]
            if k in (0, len(STEPS) - 1):
                runs[seed, k] = first if k == 0 else last
                continue
            cfg = apply_overrides(first, [f'train.schedule="{last.train.schedule}"',
                                          *step_overrides(k)])
            runs[seed, k] = dataclasses.replace(
                cfg, out=str(out / FOLDER / f"{k}-{name}" / f"dgc-faithful-s{seed}"))
            validate(runs[seed, k])
    return runs


def plan_steps(configs: Sequence[RunConfig], out: Path) -> list[RunConfig]:
    """The runs of the steps between the ends, step by step."""
    return [cfg for (_, k), cfg in ablation_runs(configs, out).items()
            if 0 < k < len(STEPS) - 1]


def table(rows: list[dict[str, Any]], seeds: list[int]) -> str:
    header = ["step", "change", "seeds", *(title for _, title in TESTED),
              "Δ ACSA (paired)", "p (ACSA, vs step before)"]
    cells = []
    for k, row in enumerate(rows):
        _, *stats = summary_rows({row["step"]: row["summary"]}, TESTED, ranked=False)[0]
        delta = row.get("delta_acsa")
        cells.append([str(k), row["change"], *stats, "" if delta is None else f"{delta:+.4f}",
                      number(row.get("p_acsa"), ".3g") if k else ""])
    lines = [f"Ablation over seeds {', '.join(map(str, seeds))}: mean ± std (ddof = 1).", ""]
    return "\n".join(lines + markdown(header, cells)) + "\n"


def write_ablation(configs: Sequence[RunConfig], out: Path) -> Path:
    """ablation.json and ablation.md in OUT from the finished runs of every step; the others
    are listed as missing. Returns the Markdown's path."""
    runs = ablation_runs(configs, out)
    seeds = sorted({seed for seed, _ in runs})
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    previous: dict[int, dict[str, Any]] = {}
    for k, (name, change, changes) in enumerate(STEPS):
        metrics = {}
        for seed in seeds:
            folder = RunDir(runs[seed, k].out_dir)
            if folder.finished():
                metrics[seed] = folder.metrics()
            else:
                missing.append(str(folder.path))
        row: dict[str, Any] = {
            "step": name, "change": change, "overrides": list(changes),
            "metrics": {str(s): m for s, m in metrics.items()},
            "summary": {key: mean_std([m[key] for m in metrics.values()]) for key, _ in TESTED}}
        if shared := [s for s in metrics if s in previous]:  # paired over the common seeds
            ours = [metrics[s]["acsa"] for s in shared]
            theirs = [previous[s]["acsa"] for s in shared]
            row["delta_acsa"] = (sum(ours) - sum(theirs)) / len(shared)
            row["p_acsa"] = paired_p_value(ours, theirs)
        previous = metrics
        rows.append(row)
    write_json(out / f"{FOLDER}.json", {"exp": configs[0].exp, "seeds": seeds, "steps": rows,
                                        "missing": missing})
    return write_text(out / f"{FOLDER}.md", table(rows, seeds))
