"""Benchmarks over methods and seeds (`dgc bench`): resumable runs, tables and significance.

Every (method, seed) pair is one run in `DIR/<method>-s<seed>/`, and the pairs are a series
(`dgc.bench.series`). On top of each method's own configuration the harness sets what must be equal
for a fair comparison, for every method alike (DGC and `dgc-faithful` included):

* the same imbalanced training set per seed (METHOD §5) and the same stratified 10 % validation
  split of it, on which every method keeps its best-ACSA checkpoint;
* the training recipe (`recipe=True`, the default): random crop with 2-pixel padding, a
  horizontal flip where the dataset allows it, and a cosine learning-rate schedule over the
  preset's epochs; without it, no augmentation and each preset's own schedule.

`results.json` holds every finished run and the paired t-tests of `dgc` against each other
method; `table.md` shows the paper's Tables 2 and 3 as mean ± sample standard deviation
(ddof = 1) over seeds, with ECE and cost. With one seed there is no standard deviation and no
test: the table says "n/a" and the JSON holds null."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dgc.bench.ablation import plan_steps, write_ablation
from dgc.bench.series import Failure, run_series
from dgc.config import RunConfig, build_config
from dgc.core.errors import DGCError
from dgc.core.io import write_json, write_text
from dgc.core.tables import (
    TABLE2,
    TABLE3,
    TESTED,
    markdown,
    mean_std,
    number,
    paired,
    paired_p_value,
    summary_rows,
    values,
)
from dgc.data import DATASETS
from dgc.methods.registry import METHODS, RELEASED_SCHEDULES, resolve_config
from dgc.reporting.plots import plot_bench
from dgc.run.folder import RunDir

VAL_FRACTION = 0.1
REFERENCE = "dgc"
SUMMARISED = [key for key, _ in TESTED] + ["seconds_train", "seconds_predict"]


def parse_seeds(text: str) -> list[int]:
    """'1-5' → [1, 2, 3, 4, 5]; '7,8' → [7, 8]; '1-3,7' → [1, 2, 3, 7] (order kept, no repeats)."""
    seeds: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last) if dash else int(first)
        except ValueError as error:
            raise DGCError(f"seeds are written like 1-5, 7,8 or 1-3,7; got {text!r}") from error
        if high < low:
            raise DGCError(f"seed range {part.strip()!r} runs backwards; write it as {high}-{low}")
        seeds += [s for s in range(low, high + 1) if s not in seeds]
    return seeds


def parse_methods(text: str) -> list[str]:
    """'all' → every registered method; 'dgc,ce' → those, checked, in order, without repeats."""
    if text.strip() == "all":
        return list(METHODS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise DGCError("--methods needs a comma-separated list of methods, or 'all'")
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise DGCError(f"unknown method(s) {', '.join(unknown)}; choose from "
                       f"{', '.join(METHODS)} or 'all'")
    return list(dict.fromkeys(names))


def apply_harness(cfg: RunConfig, recipe: bool) -> RunConfig:
    """The settings every method shares in a benchmark (see the module docstring). Recipe off
    also undoes a method's own recipe (`dgc` augments and uses a cosine schedule by default),
    and gives each method the preset's schedule, `dgc-faithful` as the released code reads it."""
    preset = build_config(cfg.exp, cfg.preset).train.schedule
    released = cfg.train.schedule == RELEASED_SCHEDULES.get(preset)
    schedule = "cosine" if recipe else cfg.train.schedule if released else preset
    return dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, val_fraction=VAL_FRACTION, augment=recipe, schedule=schedule))


def bench_config(exp: str, method: str, seed: int, out_dir: str | Path, preset: str = "cpu",
                 recipe: bool = True, overrides: Sequence[str] = (),
                 **run_fields: Any) -> RunConfig:
    """One pair's configuration: `resolve_config` with the harness, in `out_dir/METHOD-sSEED`
    (`run_fields` may hold the command line's `options`)."""
    return resolve_config(exp, preset, method, overrides=overrides,
                          out=str(Path(out_dir) / f"{method}-s{seed}"),
                          harness=lambda cfg: apply_harness(cfg, recipe), seed=seed, **run_fields)


def plan(exp: str, methods: Sequence[str], seeds: Sequence[int], out_dir: str | Path,
         **settings: Any) -> list[RunConfig]:
    """Every pair, seed by seed, so an interrupted benchmark has comparable rows."""
    return [bench_config(exp, method, seed, out_dir, **settings)
            for seed in seeds for method in methods]


def run_bench(configs: Sequence[RunConfig], out_dir: str | Path, exp: str, recipe: bool,
              paper: bool = False, progress: bool = True,
              log: Callable[[str], None] = tqdm.write, ablation: bool = False) -> dict[str, Any]:
    """Run every unfinished pair as a series, then write `results.json`, `table.md` and
    `table2.png` (the bar chart of Table 2, its numbers in `table2.json`) into `out_dir` from the
    finished ones; with `ablation`, the steps from `dgc-faithful` to `dgc` too."""
    out_dir = Path(out_dir)
    steps = plan_steps(configs, out_dir) if ablation else []

    def write(failed: list[Failure]) -> dict[str, Any]:
        results = collect(configs, exp, recipe)
        results["failed"] = [{"method": cfg.method, "seed": cfg.seed, "error": error}
                             for cfg, error in failed if cfg in configs]
        write_json(out_dir / "results.json", results)
        write_text(out_dir / "table.md", render_table(results, paper))
        if results["runs"]:
            plot_bench(results, out_dir / "table2.png",
                       DATASETS[exp].published if paper else None)
        if ablation:
            write_ablation(configs, out_dir)
        return results

    return run_series(out_dir, [*configs, *steps], write, "bench", progress, log)


def trained_on(config: dict[str, Any]) -> str | None:
    """The device a run trained on and, on the CPU, its thread counts (a resume may change
    them): either changes the numbers a seed gives, so a table that mixes them must say so."""
    device = config.get("device")
    places = [config.get("environment") or {}, *config.get("resumed_in", [])]
    counts = sorted({e["threads"] for e in places if e.get("threads")}
                    or ({config["threads"]} if config.get("threads") else set()))
    if device != "cpu" or not counts:
        return device
    return f"cpu ({' and '.join(map(str, counts))} thread{'' if counts == [1] else 's'})"


def collect(configs: Sequence[RunConfig], exp: str, recipe: bool) -> dict[str, Any]:
    """results.json's content from the finished runs among `configs`."""
    runs = []
    for cfg in configs:
        folder = RunDir(cfg.out_dir)
        if not folder.finished():
            continue
        metrics, config = folder.metrics(), folder.config()
        runs.append({"method": cfg.method, "seed": cfg.seed, "metrics": metrics,
                     "seconds_train": metrics.get("seconds_train"),
                     "seconds_predict": metrics.get("seconds_predict"),
                     "split_sha256": config.get("split_sha256"),
                     "n_params": config.get("n_params"), "device": config.get("device"),
                     "trained_on": trained_on(config)})
    methods = list(dict.fromkeys(cfg.method for cfg in configs))
    return {
        "exp": exp,
        "preset": configs[0].preset if configs else None,
        "recipe": recipe,
        "crop_pad": configs[0].train.crop_pad if configs else None,
        "keep": configs[0].train.keep if configs else None,
        "views": configs[0].predict.views if configs else None,
        "methods": methods,
        "seeds": list(dict.fromkeys(cfg.seed for cfg in configs)),
        "runs": runs,
        "summary": summarise(runs, methods),
        "tests": paired_tests(runs, methods),
    }


def summarise(runs: Sequence[dict[str, Any]], methods: Sequence[str],
              keys: Sequence[str] = SUMMARISED) -> dict[str, Any]:
    return {method: {key: mean_std(list(values(runs, method, key).values())) for key in keys}
            for method in methods}


def paired_tests(runs: Sequence[dict[str, Any]], methods: Sequence[str],
                 reference: str = REFERENCE) -> dict[str, dict[str, float | None]]:
    """{metric: {method: p}} of `reference` against every other method, over shared seeds."""
    if reference not in methods:
        return {}
    return {key: {method: paired_p_value(*paired(runs, reference, method, key))
                  for method in methods if method != reference} for key, _ in TESTED}


def published_rows(exp: str, columns: Sequence[tuple[str, str]]) -> list[list[str]]:
    rows = []
    info = DATASETS[exp]
    for method, numbers in info.published.items():
        if not any(key in numbers for key, _ in columns):
            continue
        cells = [f"{method} (published)", ""]
        for key, _ in columns:
            if key not in numbers:
                cells.append("—")
            elif method == "DGC" and key in info.published_std:
                cells.append(f"{numbers[key]:.4f} ± {info.published_std[key]:.2f}")
            else:
                cells.append(f"{numbers[key]:.4f}")
        rows.append(cells)
    return rows


def render_table(results: dict[str, Any], paper: bool = False) -> str:
    """table.md: Tables 2 and 3 of the paper for the measured methods, cost, and the t-tests."""
    exp, summary, methods = results["exp"], results["summary"], results["methods"]
    seeds = ", ".join(map(str, results["seeds"]))
    pad = results.get("crop_pad", 2)  # results.json files before crop_pad was recorded: 2
    crop = f"random crop (pad {pad})" if pad else "no random crop (the preset's crop_pad is 0)"
    recipe = (f"on: {crop}, horizontal flip where the dataset allows it, cosine schedule"
              if results["recipe"] else "off: no augmentation, each preset's schedule")
    kept = ("last-epoch weights" if results.get("keep") == "last"  # older files: "best"
            else "best-validation-ACSA checkpoint")
    views = ("; each prediction the mean over the image's eight mirrors and 90° rotations"
             if results.get("views") == "dihedral" else "")  # older files: the image alone
    lines = [f"# Benchmark: {exp}, preset {results['preset']}, seeds {seeds}", "",
             f"Training recipe {recipe}; 10 % validation split, {kept}{views}, for every method.",
             "Cells: mean ± sample standard deviation over the n seeds a method finished "
             "(n/a with one seed); **bold**: best measured mean per column (lowest for ECE)."]
    if paper:
        lines.append("Rows marked (published) are the paper's (METHOD §7), copied, not measured "
                     "here, and not ranked.")
    for title, columns in (("Table 2: class-balanced metrics", TABLE2),
                           ("Table 3: minority recall, majority precision and calibration",
                            TABLE3)):
        rows = summary_rows(summary, columns)
        if paper:
            rows += published_rows(exp, columns)
        lines += ["", f"## {title}", ""]
        lines += markdown(["method", "n", *(label for _, label in columns)], rows)

    devices = {m: sorted({r["trained_on"] for r in results["runs"]
                          if r["method"] == m and r.get("trained_on")}) for m in methods}
    lines += ["", "## Cost: seconds per seed (mean)", "",
              "Comparable only between runs that had the machine to themselves."]
    if len(set().union(*devices.values())) > 1:
        lines.append("Not every run trained on the same device and thread count (last column): "
                     "either gives the same seed other numbers, so compare such rows loosely.")
    lines += [""]
    lines += markdown(["method", "train", "test prediction", "trained on"],
                      [[f"`{m}`", *(number(summary[m][k]["mean"], ".1f")
                                    for k in ("seconds_train", "seconds_predict")),
                        "; ".join(devices[m]) or "n/a"] for m in methods])

    lines += ["", f"## Paired t-tests: `{REFERENCE}` against each method", ""]
    tests = results["tests"]
    if not tests:
        lines.append(f"No tests: `{REFERENCE}` is not among the methods.")
    else:
        lines += ["Two-sided p-values of scipy.stats.ttest_rel over the seeds both finished "
                  "(n/a with fewer than two, or when every difference is zero).", ""]
        lines += markdown(["method", *(label for _, label in TESTED)],
                          [[f"`{m}`", *(number(tests[key][m], ".3g") for key, _ in TESTED)]
                           for m in methods if m != REFERENCE])
    if failed := results.get("failed"):
        lines += ["", "Failed, left out: " + ", ".join(f"`{f['method']}` seed {f['seed']}"
                                                       for f in failed)]
    return "\n".join(lines) + "\n"
