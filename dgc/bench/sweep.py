"""Sweeps of one setting over values and seeds (`dgc sweep`), e.g. the paper's Figure 7.

Each (value, seed) pair is one run directory under the sweep's folder, and the pairs are a series
(`dgc.bench.series`: resumed, and a failed pair left out and listed). The sweep writes `sweep.json`
(every finished run and each value's mean ± sample std, null with one seed), `sweep.png` (ACSA /
F_macro / G_macro against the value) and `sweep.md`."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dgc.bench.series import Failure, run_series
from dgc.config import SECTIONS, RunConfig, apply_overrides, validate
from dgc.core.errors import DGCError
from dgc.core.io import write_json, write_text
from dgc.core.metrics import HEADLINE
from dgc.core.tables import TESTED, markdown, mean_std, plus_minus
from dgc.reporting import plots
from dgc.run.folder import RunDir

# Short names for the settings people sweep; any other is written section.field.
PARAMS = {"sampling-rate": "train.sampling_rate"}


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


def summarise(runs: list[dict[str, Any]], values: Sequence[float]) -> list[dict[str, Any]]:
    """`mean_std` of each value's finished runs."""
    rows = []
    for value in values:
        mine = [r for r in runs if r["value"] == value]
        rows.append({"value": value, "n": len(mine),
                     **{key: mean_std([r[key] for r in mine]) for key in HEADLINE}})
    return rows


def render_table(record: dict[str, Any]) -> str:
    lines = [f"# {record['method']} on {record['exp']}: {record['param']} sweep", "",
             f"Setting `{record['setting']}`, seeds {', '.join(map(str, record['seeds']))}, "
             f"preset `{record['preset']}`, {record['epochs']} epochs"
             f"{f' or more, to reach {steps} steps' if (steps := record.get('steps')) else ''}; "
             "test metrics, mean ± sample std over seeds (n/a with one).", ""]
    lines += markdown([record["param"], "runs", *(dict(TESTED)[k] for k in HEADLINE)],
                      [[f"{row['value']:g}", str(row["n"]),
                        *(plus_minus(row[k]) for k in HEADLINE)]
                       for row in record["summary"]])
    if record["failed"]:
        lines += ["", "Failed, left out: " + ", ".join(f"{record['param']} {f['value']:g} seed "
                                                       f"{f['seed']}" for f in record["failed"])]
    return "\n".join(lines) + "\n"


def run_sweep(base: RunConfig, param: str, values: Sequence[float], seeds: Sequence[int],
              out: str | Path, progress: bool = True,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or reuse) one run per (value, seed) as a series and write sweep.json, sweep.png
    and sweep.md from the finished ones; returns the record saved as sweep.json. Each run is
    `base` with only its seed, the swept setting and its directory changed."""
    setting = setting_of(param)
    if not values or not seeds:
        raise DGCError("a sweep needs at least one value and one seed")
    out = Path(out)
    pairs: dict[str, tuple[float, RunConfig]] = {}
    for value in values:
        for seed in seeds:
            cfg = apply_overrides(dataclasses.replace(base, seed=seed),
                                  [f"{setting}={json.dumps(value)}"])
            cfg = dataclasses.replace(cfg, out=str(out / run_name(param, value, seed)))
            validate(cfg)
            if cfg.out_dir in pairs:
                raise DGCError(f"--values {pairs[cfg.out_dir][0]!r} and {value!r} share the run "
                               f"folder {Path(cfg.out_dir).name}; give values that differ in "
                               "their first six significant digits")
            pairs[cfg.out_dir] = value, cfg

    def write(failed: list[Failure]) -> dict[str, Any]:
        runs = []
        for value, cfg in pairs.values():
            if (folder := RunDir(cfg.out_dir)).finished():
                metrics = folder.metrics()
                runs.append({"value": value, "seed": cfg.seed, "dir": folder.path.name,
                             **{k: metrics[k] for k in HEADLINE}})
        record = {"exp": base.exp, "method": base.method, "preset": base.preset, "param": param,
                  "setting": setting, "epochs": base.train.epochs, "steps": base.train.steps,
                  "values": list(values), "seeds": list(seeds),
                  "std": "sample standard deviation over seeds (ddof = 1)",
                  "runs": runs, "summary": summarise(runs, values),
                  "failed": [{"value": pairs[cfg.out_dir][0], "seed": cfg.seed, "error": error}
                             for cfg, error in failed]}
        if runs:  # the plot saves the record as its data, sweep.json
            plots.plot_sweep(record, out / "sweep.png")
        else:
            write_json(out / "sweep.json", record)
        write_text(out / "sweep.md", render_table(record))
        return record

    return run_series(out, [cfg for _, cfg in pairs.values()], write, "sweep", progress, log)
