"""The quick default `dgc train --exp digits`: test ACSA over seeds next to logistic regression.

For each step budget in `--steps` and each seed, trains the `dgc` method on imbalanced digits
with the `cpu` preset (`train.steps` set to the budget; the preset's own is the default) into
OUT/steps-<S>/s<seed>, reusing finished runs; fits scikit-learn's logistic regression with
balanced class weights on the same training split (the same 10 % held out). The validation
ACSA chooses the budget; the test ACSA only reports it. Writes OUT/digits_floor.json and
OUT/digits_floor.md; a run is reused when its metrics.json and history.json are there.

    python experiments/digits_floor.py --seeds 0-4 --threads 1 --out runs/digits-floor
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from tqdm.auto import tqdm

from dgc.bench.benchmark import parse_seeds
from dgc.config import SMALL_DATA_STEPS
from dgc.core.io import read_json, write_json, write_text
from dgc.core.metrics import acsa
from dgc.data import load_imbalanced, split_validation
from dgc.methods.registry import resolve_config
from dgc.run.folder import HISTORY, RunDir
from dgc.run.train import train_run


def dgc_run(steps: int, seed: int, out: Path) -> dict[str, Any]:
    """One `dgc train --exp digits --seed SEED --set train.steps=STEPS` run."""
    cfg = resolve_config("digits", "cpu", "dgc", overrides=[f"train.steps={steps}"], out=str(out),
                         seed=seed)
    run = RunDir(out)
    if not run.finished():
        train_run(cfg, progress=False, log=lambda _: None)
    history = read_json(run / HISTORY)
    val = max(record["val"]["acsa"] for record in history["epochs"] if "val" in record)
    return {"val_acsa": val, "test_acsa": run.metrics()["acsa"], "epochs": len(history["epochs"])}


def logistic(seed: int) -> dict[str, float]:
    """Balanced logistic regression on the run's training split, scored like the runs."""
    data = load_imbalanced("digits", seed)
    x, y, x_val, y_val = split_validation(data.x_train, data.y_train, 0.1, seed)
    flat = [a.reshape(len(a), -1) / 255.0 for a in (x, x_val, data.x_test)]
    model = LogisticRegression(class_weight="balanced", max_iter=5000).fit(flat[0], y)
    return {"val_acsa": acsa(y_val, model.predict(flat[1])),
            "test_acsa": acsa(data.y_test, model.predict(flat[2]))}


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    test = np.array([r["test_acsa"] for r in rows])
    val = np.array([r["val_acsa"] for r in rows])
    return {"val_mean": float(val.mean()), "test_mean": float(test.mean()),
            "test_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
            "test_min": float(test.min())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default=f"1000,{SMALL_DATA_STEPS},4000",
                        help="comma-separated step budgets (the cpu preset's is "
                             f"{SMALL_DATA_STEPS})")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/digits-floor")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds, out = parse_seeds(args.seeds), Path(args.out)
    budgets = [int(s) for s in args.steps.split(",")]
    results: dict[str, Any] = {"seeds": seeds, "threads": args.threads, "rows": {}}
    for steps in tqdm(budgets, desc="budgets"):
        name = f"dgc, {steps} steps" + (" (the default)" if steps == SMALL_DATA_STEPS else "")
        runs = [dgc_run(steps, seed, out / f"steps-{steps}" / f"s{seed}")
                for seed in tqdm(seeds, desc=name, leave=False)]
        results["rows"][name] = {"runs": runs, **summary(runs)}
    runs = [logistic(seed) for seed in seeds]
    results["rows"]["logistic regression (balanced)"] = {"runs": runs, **summary(runs)}
    lines = ["| method | epochs | validation ACSA (mean) | test ACSA mean ± std | test ACSA min |"
             + " per seed |", "|---|---|---|---|---|---|"]
    for name, row in results["rows"].items():
        epochs = ",".join(sorted({str(r["epochs"]) for r in row["runs"] if "epochs" in r}))
        per_seed = " ".join(f"{r['test_acsa']:.3f}" for r in row["runs"])
        lines.append(f"| {name} | {epochs or '—'} | {row['val_mean']:.4f} | "
                     f"{row['test_mean']:.4f} ± {row['test_std']:.4f} | {row['test_min']:.4f} | "
                     f"{per_seed} |")
    write_json(out / "digits_floor.json", results)
    write_text(out / "digits_floor.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
