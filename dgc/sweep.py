"""Sweeps of one setting over values and seeds (`dgc sweep`), e.g. the paper's Figure 7.

Each (value, seed) pair is one ordinary run directory under the sweep's folder. A pair is
finished once its metrics.json exists: a second call skips it (after checking that it was run
with the same settings) and continues an interrupted one from its checkpoint, so a sweep can be
stopped and restarted at any time. The sweep writes `sweep.json` (every run and the mean ± std of
each value), `sweep.png` (ACSA / F_macro / G_macro against the value) and `sweep.md`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dgc import plots
from dgc.config import SECTIONS, RunConfig, apply_overrides, validate
from dgc.errors import DGCError
from dgc.experiment import finished_differences, train_run
from dgc.io import read_json, write_text
from dgc.metrics import HEADLINE
from dgc.progress import bar as progress_bar

# Short names for the settings people sweep; any other is written section.field.
PARAMS = {"sampling-rate": "train.sampling_rate"}
# Settings that may differ between a finished run and the sweep asking for it.
LABELS = {"acsa": "ACSA", "f_macro": "F_macro", "g_macro": "G_macro", "r_mi": "R_MI",
          "p_ma": "P_MA"}


def setting_of(param: str) -> str:
    """The `section.field` a sweep parameter changes ('sampling-rate' → 'train.sampling_rate')."""
    if param in PARAMS:
        return PARAMS[param]
    section, dot, name = param.partition(".")
    if dot and section in SECTIONS and name:
        return param
    raise DGCError(f"cannot sweep {param!r}; use one of {', '.join(PARAMS)} or any setting "
                   "written section.field, e.g. train.lr")


def parse_values(text: str) -> list[float]:
    """'0.2,0.4,1' → [0.2, 0.4, 1]: finite numbers, sorted, without repeats."""
    values: list[float] = []
    for part in text.split(","):
        try:
            value = json.loads(part.strip())
        except json.JSONDecodeError:
            value = None
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise DGCError(f"--values takes comma-separated numbers such as 0.2,0.4,0.6; "
                           f"got {part.strip()!r} in {text!r}")
        if value not in values:
            values.append(value)
    return sorted(values)


def run_name(param: str, value: float, seed: int) -> str:
    return f"{param}-{value:g}-s{seed}"


def check_finished(run_dir: Path, cfg: RunConfig) -> None:
    """Refuse to reuse a finished run whose settings are not the ones the sweep asks for."""
    if differences := finished_differences(run_dir, cfg):
        raise DGCError(f"{run_dir} was run with other settings ({'; '.join(differences)}); "
                       "sweep into another --out, or delete that run to redo it")


def summarise(runs: list[dict[str, Any]], values: Sequence[float]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (ddof = 1; 0 for one seed) of each value's runs."""
    rows = []
    for value in values:
        mine = [r for r in runs if r["value"] == value]
        row: dict[str, Any] = {"value": value, "n": len(mine)}
        for key in HEADLINE:
            numbers = np.array([r[key] for r in mine], dtype=float)
            row[key] = {"mean": float(numbers.mean()),
                        "std": float(numbers.std(ddof=1)) if len(numbers) > 1 else 0.0}
        rows.append(row)
    return rows


def markdown(record: dict[str, Any]) -> str:
    lines = [f"# {record['method']} on {record['exp']}: {record['param']} sweep", "",
             f"Setting `{record['setting']}`, seeds {', '.join(map(str, record['seeds']))}, "
             f"preset `{record['preset']}`, {record['epochs']} epochs"
             f"{f' or more, to reach {steps} steps' if (steps := record.get('steps')) else ''}; "
             "test metrics, mean ± "
             "sample std over seeds.", "",
             "| " + " | ".join([record["param"], "runs", *(LABELS[k] for k in HEADLINE)]) + " |",
             "|" + "---|" * (len(HEADLINE) + 2)]
    for row in record["summary"]:
        cells = [f"{row[k]['mean']:.4f} ± {row[k]['std']:.4f}" for k in HEADLINE]
        lines.append("| " + " | ".join([f"{row['value']:g}", str(row["n"]), *cells]) + " |")
    return "\n".join(lines) + "\n"


def run_sweep(base: RunConfig, param: str, values: Sequence[float], seeds: Sequence[int],
              out: str | Path, progress: bool = True,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or reuse) one run per (value, seed) and write sweep.json, sweep.png, sweep.md.

    `base` is the configuration every run starts from (dataset, preset, method, epochs, ...);
    each run changes only its seed, the swept setting and its directory. Returns the record
    saved as sweep.json.
    """
    setting = setting_of(param)
    if not values or not seeds:
        raise DGCError("a sweep needs at least one value and one seed")
    out = Path(out)
    configs = []
    for value in values:
        for seed in seeds:
            cfg = apply_overrides(dataclasses.replace(base, seed=seed),
                                  [f"{setting}={json.dumps(value)}"])
            cfg = dataclasses.replace(cfg, out=str(out / run_name(param, value, seed)))
            validate(cfg)
            configs.append((value, seed, cfg))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DGCError(f"cannot create the sweep folder {out}: {error.strerror}") from error
    runs = []
    for value, seed, cfg in progress_bar(configs, progress, desc="sweep", unit="run"):
        run_dir = Path(cfg.out)
        if (run_dir / "metrics.json").exists():
            check_finished(run_dir, cfg)
            log(f"dgc: {run_dir.name} is finished; reusing its metrics")
            metrics = read_json(run_dir / "metrics.json")
        else:
            metrics = train_run(cfg, resume=run_dir.exists(), progress=False, log=log)
        runs.append({"value": value, "seed": seed, "dir": run_dir.name,
                     **{k: metrics[k] for k in HEADLINE}})
    record = {"exp": base.exp, "method": base.method, "preset": base.preset, "param": param,
              "setting": setting, "epochs": base.train.epochs, "steps": base.train.steps,
              "values": list(values),
              "seeds": list(seeds), "std": "sample standard deviation over seeds (ddof = 1)",
              "runs": runs, "summary": summarise(runs, values)}
    plots.plot_sweep(record, out / "sweep.png")
    write_text(out / "sweep.md", markdown(record))
    return record
