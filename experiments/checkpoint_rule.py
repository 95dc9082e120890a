"""Which epoch a run keeps, each rule judged on validation images that did not choose it.

The epoch loop keeps the epoch of the best validation ACSA. On a small validation split (ELPV's
holds 8 images of grade ⅔: one image is 3 points of ACSA) the best of twenty noisy epochs is
partly noise. On the whole split the best-validation rule wins by construction, and the test set
must not choose; so each run's validation images are split in two halves, stratified by class,
`--halvings` times. A rule picks its epoch from the predictions on one half and is scored (ACSA)
on the other, both ways round. The rules:

- `best`: the epoch of the highest ACSA, the first of equals (what the loop does);
- `smoothed`: the highest ACSA averaged over an epoch and its neighbours (`WINDOW` epochs);
- `last`: the last epoch, which needs no validation.

It reads each run's history.json, whose `validation` entry holds every validated epoch's
prediction of each validation image (recorded by runs trained since that entry was added), and
writes checkpoint-rule.json and checkpoint-rule.md to `--out` (the first run's parent folder by
default): each rule's held-out ACSA per run, its mean per method and over every run, and paired
t-tests of `best` against the others over the runs.

With `--test`, the test set is scored too, for the record (it chooses nothing): the kept
weights' metrics (metrics.json) beside the last epoch's (checkpoint.pt), which are what
`train.keep=last` would have kept, since the rule does not change training.

    python experiments/checkpoint_rule.py runs/bench-elpv/*-s[0-9]* --test
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dgc.core.io import load_checkpoint, read_json, write_json, write_text
from dgc.core.metrics import compute_metrics
from dgc.core.tables import markdown, mean_std, number, paired_p_value, plus_minus
from dgc.run.finished import load_run, recorded_data
from dgc.run.folder import CHECKPOINT, CONFIG, HISTORY, METRICS
from dgc.run.predict import predict_images

WINDOW = 3


def smoothed(scores: np.ndarray) -> np.ndarray:
    """Each epoch's score averaged with its neighbours (fewer at the ends)."""
    half = WINDOW // 2
    return np.array([scores[max(0, i - half):i + half + 1].mean() for i in range(len(scores))])


RULES: dict[str, Callable[[np.ndarray], int]] = {
    "best": lambda scores: int(np.argmax(scores)),
    "smoothed": lambda scores: int(np.argmax(smoothed(scores))),
    "last": lambda scores: len(scores) - 1,
}


def acsa_by_epoch(correct: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """ACSA of every epoch (rows of `correct`, epochs × images) on the images `rows`: the mean
    over the classes present there of each class's recall."""
    classes = [rows[labels[rows] == c] for c in np.unique(labels[rows])]
    return np.mean([correct[:, members].mean(1) for members in classes], axis=0)


def halves(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The images split in two, each class's images shuffled and dealt half to each side (the
    odd one to a random side), so that both halves keep the class proportions."""
    first, second = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        cut = len(members) // 2 + int(len(members) % 2 and rng.random() < 0.5)
        first.append(members[:cut])
        second.append(members[cut:])
    return np.concatenate(first), np.concatenate(second)


def held_out_scores(validation: dict[str, Any], halvings: int, seed: int) -> dict[str, Any]:
    """Each rule's ACSA on the half that did not choose, averaged over the halvings and both
    directions, with the mean epoch it chose."""
    labels = np.asarray(validation["labels"])
    correct = np.asarray(validation["predicted"]) == labels
    epochs = np.asarray(validation["epochs"])
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {rule: [] for rule in RULES}
    chosen: dict[str, list[int]] = {rule: [] for rule in RULES}
    for _ in range(halvings):
        a, b = halves(labels, rng)
        for choose, score in ((a, b), (b, a)):
            on_choice, on_score = (acsa_by_epoch(correct, labels, choose),
                                   acsa_by_epoch(correct, labels, score))
            for rule, pick in RULES.items():
                index = pick(on_choice)
                scores[rule].append(float(on_score[index]))
                chosen[rule].append(int(epochs[index]))
    return {rule: {"acsa": float(np.mean(scores[rule])),
                   "epoch": float(np.mean(chosen[rule]))} for rule in RULES}


def scores_on_test_set(run_dir: Path) -> dict[str, dict[str, float]]:
    """ACSA and accuracy on the test set of the kept weights and of the last epoch's."""
    run = load_run(run_dir)
    data = recorded_data(run)
    run.model.load_state_dict(load_checkpoint(run_dir / CHECKPOINT)["model"])
    probs = predict_images(run.model, data.x_test, run.cfg, run.cfg.predict)
    last = compute_metrics(data.y_test, probs.argmax(1), data.train_counts)
    kept = read_json(run_dir / METRICS)
    return {name: {key: float(metrics[key]) for key in ("acsa", "accuracy")}
            for name, metrics in (("kept", kept), ("last", last))}


def study(run_dirs: Sequence[Path], halvings: int, test: bool) -> list[dict[str, Any]]:
    """Every run's held-out scores; a run without recorded predictions ends the script."""
    rows = []
    for run_dir in run_dirs:
        history = read_json(run_dir / HISTORY)
        if "validation" not in history:
            raise SystemExit(f"checkpoint_rule.py: {run_dir / HISTORY} has no `validation` "
                             "entry: the run was trained before validation predictions were "
                             "recorded, or without a validation split; train it again")
        config = read_json(run_dir / CONFIG)
        rows.append({"run": str(run_dir), "method": config["method"], "seed": config["seed"],
                     "epochs": len(history["validation"]["epochs"]),
                     "rules": held_out_scores(history["validation"], halvings, config["seed"]),
                     **({"test": scores_on_test_set(run_dir)} if test else {})})
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each rule's mean ± std per method and over every run, and `best` against each other rule
    (paired over the runs)."""
    groups = {method: [r for r in rows if r["method"] == method]
              for method in dict.fromkeys(r["method"] for r in rows)} | {"every run": rows}
    summary = {group: {rule: mean_std([r["rules"][rule]["acsa"] for r in members])
                       for rule in RULES} for group, members in groups.items()}
    tests = {group: {rule: paired_p_value([r["rules"]["best"]["acsa"] for r in members],
                                          [r["rules"][rule]["acsa"] for r in members])
                     for rule in RULES if rule != "best"} for group, members in groups.items()}
    if not all("test" in r for r in rows):
        return {"summary": summary, "tests": tests}
    test = {group: {f"{weights} {key}": mean_std([r["test"][weights][key] for r in members])
                    for key in ("acsa", "accuracy") for weights in ("kept", "last")}
            | {"p acsa": paired_p_value(*([r["test"][weights]["acsa"] for r in members]
                                          for weights in ("kept", "last")))}
            for group, members in groups.items()}
    return {"summary": summary, "tests": tests, "test": test}


def table_of_test_set(test: dict[str, Any]) -> list[str]:
    """The test set's table, kept weights beside the last epoch's, for the record."""
    columns = ("kept acsa", "last acsa", "kept accuracy", "last accuracy")
    return ["", "The test set, for the record (it chose nothing): the kept weights against the "
            "last epoch's; p: paired t-test of their ACSA over the runs.", "",
            *markdown(["runs", "n", "kept ACSA", "last ACSA", "kept accuracy", "last accuracy",
                       "p (ACSA)"],
                      [[group, str(cells["kept acsa"]["n"]),
                        *(plus_minus(cells[column]) for column in columns),
                        number(cells["p acsa"], ".3g")] for group, cells in test.items()])]


def report(rows: list[dict[str, Any]], summary: dict[str, Any], halvings: int) -> str:
    per_run = markdown(["run", *(f"{rule} (epoch)" for rule in RULES)],
                       [[f"`{r['method']}` s{r['seed']} ({Path(r['run']).parent.name})",
                         *(f"{r['rules'][rule]['acsa']:.4f} ({r['rules'][rule]['epoch']:.1f})"
                           for rule in RULES)] for r in rows])
    means = markdown(["runs", "n", *RULES, *(f"p best vs {rule}" for rule in RULES
                                             if rule != "best")],
                     [[group, str(stats["best"]["n"]), *(plus_minus(stats[rule]) for rule in RULES),
                       *(number(p, ".3g") for p in summary["tests"][group].values())]
                      for group, stats in summary["summary"].items()])
    return "\n".join([
        "# The kept epoch's rule, judged on the validation half that did not choose it", "",
        f"Validation ACSA on the other half, mean over {halvings} stratified halvings and both "
        "directions; in brackets the mean epoch chosen.", "", *per_run, "",
        "Mean ± std over the runs; two-sided paired t-tests over the runs:", "", *means,
        *(table_of_test_set(summary["test"]) if "test" in summary else []), ""])


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("runs", nargs="+", help="run folders")
    arguments.add_argument("--halvings", type=int, default=200,
                           help="random stratified halvings of each validation split")
    arguments.add_argument("--out", type=Path, help="folder for checkpoint-rule.json and .md")
    arguments.add_argument("--test", action="store_true",
                           help="also score the test set with the kept and the last weights")
    arguments.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    args = arguments.parse_args()
    torch.set_num_threads(args.threads)
    run_dirs = [Path(r) for r in args.runs]
    rows = study(run_dirs, args.halvings, args.test)
    summary = summarise(rows)
    out = args.out or run_dirs[0].parent
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "checkpoint-rule.json", {"halvings": args.halvings, "runs": rows, **summary})
    text = report(rows, summary, args.halvings)
    write_text(out / "checkpoint-rule.md", text)
    print(text)


if __name__ == "__main__":
    main()
