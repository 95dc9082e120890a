"""Test-time augmentation: does averaging a run's class probabilities over mirrored and rotated
copies of each image beat predicting on the image alone?

A run that trained on mirrors (`train.augment` on data that allows them) or on the eight
symmetries of a square (`train.dihedral`) has seen those views of every image, so its
probabilities can be averaged over them at prediction time. For each run this scores its
validation split (which judges) and its test set (which only reports) three ways: the image
alone, the mean over the image and its mirror, and the mean over the eight symmetries (mirror
and dihedral only where the run trained on them; a run that trained on neither is refused).
`predict.views=dihedral` is the third way as a setting of every prediction.

The weights are the last epoch's (checkpoint.pt), not the kept ones: the kept epoch was chosen
by the validation ACSA of the image alone, which would favour it on that same split.

Prints ACSA and accuracy of each way averaged over each method's runs (and over every run), and
paired t-tests of each against the image alone on the validation split; `--json` writes every
run's numbers.

    python experiments/dihedral_views.py runs/bench-elpv/*-s[0-9]*
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from dgc.core.errors import DGCError
from dgc.core.io import load_checkpoint, write_json
from dgc.core.metrics import acsa
from dgc.core.tables import markdown, mean_std, number, paired_p_value, plus_minus
from dgc.data import split_validation
from dgc.run.finished import Run, load_run, recorded_data
from dgc.run.folder import CHECKPOINT
from dgc.run.predict import predict_images
from dgc.train.augment import dihedral_views


def trained_views(run: Run, hflip: bool) -> str:
    """The widest set of views the run trained on: "dihedral", "mirror", or a refusal."""
    if run.cfg.train.dihedral:
        return "dihedral"
    if run.cfg.train.augment and hflip:
        return "mirror"
    raise DGCError(f"{run.directory} trained on neither mirrors nor 90° rotations, so it never "
                   "saw the views this study averages over; give runs trained with "
                   "train.dihedral, or train.augment on data that allows mirrors")


def scores(run_dir: str) -> tuple[str, dict[str, dict[str, float]]]:
    """The run's method, and the ACSA and accuracy of each way of predicting on its validation
    split and its test set."""
    run = load_run(run_dir)
    data = recorded_data(run)
    kind = trained_views(run, data.hflip)
    run.model.load_state_dict(load_checkpoint(Path(run_dir) / CHECKPOINT)["model"])
    _, _, x_val, y_val = split_validation(data.x_train, data.y_train,
                                          run.cfg.train.val_fraction, run.cfg.seed)
    ways = {"image": 1, "mirror": 2, **({"dihedral": 8} if kind == "dihedral" else {})}
    alone = dataclasses.replace(run.cfg.predict, views="image")
    out: dict[str, dict[str, float]] = {}
    for split, x, y in (("validation", x_val, y_val), ("test", data.x_test, data.y_test)):
        views = dihedral_views(torch.from_numpy(x), dims=(1, 2))[:max(ways.values())]
        probs = [predict_images(run.model, view.numpy(), run.cfg, alone) for view in views]
        for way, count in ways.items():
            predicted = np.mean(probs[:count], axis=0).argmax(1)
            out.setdefault(way, {}).update({f"{split} ACSA": acsa(y, predicted),
                                            f"{split} accuracy": float(np.mean(predicted == y))})
    return run.cfg.method, out


def table(rows: list[dict[str, dict[str, float]]]) -> list[str]:
    """Each way's mean ± std over `rows`, and its paired t-test against the image alone."""
    ways = [way for way in rows[0] if all(way in row for row in rows)]
    columns = list(rows[0]["image"])
    lines = [[way, *(plus_minus(mean_std([row[way][c] for row in rows])) for c in columns),
              "—" if way == "image" else number(paired_p_value(
                  [row[way]["validation ACSA"] for row in rows],
                  [row["image"]["validation ACSA"] for row in rows]))]
             for way in ways]
    return markdown(["views", *columns, "p against the image (validation ACSA)"], lines)


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("runs", nargs="+", help="run folders")
    arguments.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    arguments.add_argument("--json", help="also write every run's numbers to this file")
    args = arguments.parse_args()
    torch.set_num_threads(args.threads)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    methods: dict[str, list[str]] = {}
    for run_dir in args.runs:
        try:
            method, rows[run_dir] = scores(run_dir)
        except DGCError as error:
            raise SystemExit(f"dihedral_views: {error}") from None
        methods.setdefault(method, []).append(run_dir)
        print(f"{run_dir}: validation ACSA " + ", ".join(
            f"{way} {row['validation ACSA']:.4f}" for way, row in rows[run_dir].items()),
              flush=True)
    groups = {f"`{method}`": runs for method, runs in methods.items()}
    if len(groups) > 1:
        groups["every run"] = list(rows)
    for name, runs in groups.items():
        print(f"\n{name}: {len(runs)} run(s), last-epoch weights")
        print("\n".join(table([rows[run] for run in runs])))
    if args.json:
        write_json(Path(args.json), {"weights": "last epoch", "runs": rows})


if __name__ == "__main__":
    main()
