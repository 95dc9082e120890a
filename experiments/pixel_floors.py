"""Pixel floors beside a benchmark: what a linear model and gradient boosting get from raw pixels.

For every seed of a finished `dgc bench` folder, fits on the very rows its methods trained on
(the run's training split, its validation rows left out) and scores the same test set:

- balanced logistic regression on the first 100 principal components of the standardised
  pixels (fewer where the images have fewer pixels);
- scikit-learn's histogram gradient boosting, class-balanced, on the same components: on the
  9 216 pixels of a 96-px image it took over 7 minutes a seed on one thread.

Then one table of every method of the benchmark with the floors: ACSA, accuracy, F_macro, ECE
and training seconds, mean ± std over the seeds, with paired t-tests of `dgc` against each row
(floors.json and floors.md in the benchmark folder). A method that cannot beat these floors has
learnt nothing the pixels did not already say.

    python experiments/pixel_floors.py runs/bench-elpv-cpu --threads 2
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import parse, parser
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dgc.core.io import read_json, write_json, write_text
from dgc.core.metrics import compute_metrics
from dgc.core.tables import (
    markdown,
    mean_std,
    number,
    paired,
    paired_p_value,
    summary_rows,
    values,
)
from dgc.run.finished import run_data, to_train_data
from dgc.run.folder import RunDir

COLUMNS = (("acsa", "ACSA"), ("accuracy", "accuracy"), ("f_macro", "F_macro"), ("ece", "ECE"),
           ("seconds_train", "train s"))
COMPONENTS = 100


def on_components(model: Any, seed: int, pixels: int) -> Any:
    """`model` on the first `COMPONENTS` principal components of the standardised pixels."""
    return make_pipeline(StandardScaler(), PCA(min(COMPONENTS, pixels), random_state=seed), model)


FLOORS: dict[str, Callable[[int, int], Any]] = {
    "logistic-pca": lambda seed, pixels: on_components(
        LogisticRegression(class_weight="balanced", max_iter=5000), seed, pixels),
    "gradient-boosting": lambda seed, pixels: on_components(
        HistGradientBoostingClassifier(class_weight="balanced", random_state=seed), seed, pixels),
}


def floor_rows(bench: Path, seeds: list[int], method: str) -> list[dict[str, Any]]:
    """Each floor's test metrics per seed, on the training split of `method`'s run."""
    rows = []
    for seed in seeds:
        cfg = RunDir(bench / f"{method}-s{seed}").settings()
        data = run_data(cfg)
        split = to_train_data(data, cfg)
        x = split.x.permute(0, 2, 3, 1).reshape(len(split.x), -1).numpy()
        x_test = data.x_test.reshape(len(data.x_test), -1) / 255.0
        for name, make in FLOORS.items():
            started = time.perf_counter()
            model = make(seed, x.shape[1]).fit(x, split.y.numpy())
            seconds = time.perf_counter() - started
            probs = model.predict_proba(x_test)
            metrics = compute_metrics(data.y_test, probs.argmax(1), data.train_counts,
                                      data.class_names, y_prob=probs)
            rows.append({"method": name, "seed": seed, "metrics": metrics,
                         "seconds_train": seconds})
            print(f"{name}, seed {seed}: ACSA {metrics['acsa']:.4f}, accuracy "
                  f"{metrics['accuracy']:.4f} ({seconds:.1f} s)", flush=True)
    return rows


def main() -> None:
    args = parse(parser(__doc__))
    bench = Path(args.runs[0])
    results = read_json(bench / "results.json")
    floors = floor_rows(bench, results["seeds"], results["runs"][0]["method"])
    every = results["runs"] + floors
    rows = [*results["methods"], *FLOORS]
    summary = {row: {key: mean_std(list(values(every, row, key).values())) for key, _ in COLUMNS}
               for row in rows}
    table = markdown(["method", "n", *(label for _, label in COLUMNS)],
                     summary_rows(summary, COLUMNS, ("ece", "seconds_train")))
    tests = {row: {key: paired_p_value(*paired(every, "dgc", row, key))
                   for key, _ in COLUMNS[:4]} for row in rows if row != "dgc"}
    test_table = markdown(["`dgc` against", *(label for _, label in COLUMNS[:4])],
                          [[f"`{row}`", *(number(p, ".3g") for p in cells.values())]
                           for row, cells in tests.items()])
    text = "\n".join([f"# {results['exp']}: every method and the pixel floors, seeds "
                      f"{', '.join(map(str, results['seeds']))}", "", *table, "",
                      "Two-sided paired t-tests over the seeds (p):", "", *test_table, ""])
    write_json(bench / "floors.json", {"floors": floors, "summary": summary, "tests": tests})
    write_text(bench / "floors.md", text)
    print(text)


if __name__ == "__main__":
    main()
