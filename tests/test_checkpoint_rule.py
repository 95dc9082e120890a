"""experiments/checkpoint_rule.py: the kept epoch's rules judged on validation halves that did not
choose them, on validation records written here and on a real run's history."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from dgc.core.metrics import acsa

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "checkpoint_rule.py"


@pytest.fixture(scope="module")
def rule() -> ModuleType:
    spec = importlib.util.spec_from_file_location("checkpoint_rule", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_halves_are_disjoint_stratified_and_cover_every_image(rule: ModuleType) -> None:
    labels = np.repeat([0, 1, 2, 3], [40, 9, 3, 1])
    rng = np.random.default_rng(0)
    sides = set()
    for _ in range(20):
        a, b = rule.halves(labels, rng)
        assert sorted([*a, *b]) == list(range(len(labels)))
        assert np.all(np.abs(np.bincount(labels[a], minlength=4)
                             - np.bincount(labels[b], minlength=4)) <= 1)
        sides.add(int(3 in labels[a]))
    assert sides == {0, 1}  # the single image of class 3 goes either way


def test_acsa_by_epoch_is_each_epochs_acsa_on_the_rows(rule: ModuleType) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 30)
    predicted = rng.integers(0, 3, (5, 30))
    rows = rng.permutation(30)[:17]
    expected = [acsa(labels[rows], p[rows]) for p in predicted]
    assert np.allclose(rule.acsa_by_epoch(predicted == labels, labels, rows), expected)


def record(labels: np.ndarray, predicted: list[np.ndarray]) -> dict[str, Any]:
    return {"labels": labels.tolist(), "epochs": list(range(1, len(predicted) + 1)),
            "predicted": [p.tolist() for p in predicted]}


def test_rules_choose_a_consistently_better_epoch_and_not_a_noisy_one(rule: ModuleType) -> None:
    labels = np.repeat([0, 1], 20)
    wrong = 1 - labels
    # epoch 2 is right on every image: every rule but `last` keeps it, on either half
    scores = rule.held_out_scores(record(labels, [wrong, labels, wrong, wrong]), 10, 0)
    assert scores["best"] == {"acsa": 1.0, "epoch": 2.0}
    # averaged with its neighbours, the lone good epoch scores below the first one (1/2 > 1/3)
    assert scores["smoothed"] == {"acsa": 0.0, "epoch": 1.0}
    assert scores["last"] == {"acsa": 0.0, "epoch": 4.0}
    # epoch 1 is right on a random half of the images only: it wins on the half that chooses
    # more often than on the half that scores, so `best` scores below `last` (right on 60 %)
    rng = np.random.default_rng(2)
    lucky = np.where(rng.random(40) < 0.5, labels, wrong)
    steady = labels.copy()
    steady[[0, 1, 2, 3, 20, 21, 22, 23]] = 1 - steady[[0, 1, 2, 3, 20, 21, 22, 23]]
    steady[[4, 5, 6, 7, 24, 25, 26, 27]] = 1 - steady[[4, 5, 6, 7, 24, 25, 26, 27]]
    noisy = rule.held_out_scores(record(labels, [lucky, wrong, wrong, steady]), 200, 0)
    assert noisy["last"]["acsa"] == pytest.approx(0.6)
    assert noisy["best"]["acsa"] < noisy["last"]["acsa"]


def test_the_script_reads_a_benchmark_and_refuses_a_run_without_records(
        tmp_path: Path) -> None:
    labels = np.repeat([0, 1, 2], [12, 6, 2])
    rng = np.random.default_rng(3)
    runs = []
    for method, seed in (("dgc", 1), ("dgc", 2), ("ce", 1), ("ce", 2)):
        run = tmp_path / f"{method}-s{seed}"
        run.mkdir()
        predicted = [np.where(rng.random(20) < 0.7, labels, 0) for _ in range(5)]
        (run / "history.json").write_text(json.dumps(
            {"epochs": [], "validation": record(labels, predicted)}))
        (run / "config.json").write_text(json.dumps({"method": method, "seed": seed}))
        runs.append(str(run))
    out = tmp_path / "study"
    done = subprocess.run([sys.executable, str(SCRIPT), *runs, "--halvings", "5",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    written = json.loads((out / "checkpoint-rule.json").read_text())
    assert [(r["method"], r["seed"]) for r in written["runs"]] == [
        ("dgc", 1), ("dgc", 2), ("ce", 1), ("ce", 2)]
    assert all(r["rules"]["last"]["epoch"] == 5 for r in written["runs"])
    assert list(written["summary"]) == ["dgc", "ce", "every run"]
    assert written["summary"]["every run"]["best"]["n"] == 4
    assert set(written["tests"]["every run"]) == {"smoothed", "last"}
    assert "| every run | 4 |" in (out / "checkpoint-rule.md").read_text()

    (tmp_path / "ce-s2" / "history.json").write_text(json.dumps({"epochs": []}))
    done = subprocess.run([sys.executable, str(SCRIPT), *runs, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "ce-s2/history.json has no `validation` entry" in done.stderr
