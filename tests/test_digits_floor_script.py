"""Smoke test of experiments/digits_floor.py: what it writes and that it reuses finished runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(ROOT / "experiments" / "digits_floor.py"), "--steps", "8,16",
               "--seeds", "0-1", "--threads", "1", "--out", str(out)]
    return subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True,
                          timeout=600)


def test_digits_floor_writes_its_table_and_reuses_runs(tmp_path: Path) -> None:
    out = tmp_path / "floor"
    result = run_script(out)
    assert result.returncode == 0, result.stderr[-4000:]
    record = json.loads((out / "digits_floor.json").read_text())
    assert record["seeds"] == [0, 1]
    assert list(record["rows"]) == ["dgc, 8 steps", "dgc, 16 steps",
                                    "logistic regression (balanced)"]
    assert [r["epochs"] for r in record["rows"]["dgc, 16 steps"]["runs"]] == [30, 30]
    logistic = record["rows"]["logistic regression (balanced)"]
    assert 0.85 < logistic["test_min"] <= logistic["test_mean"] < 1
    table = (out / "digits_floor.md").read_text()
    assert table.count("\n") == 5 and "| logistic regression (balanced) | — |" in table
    metrics = out / "steps-8" / "s0" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    assert run_script(out).returncode == 0
    assert metrics.stat().st_mtime_ns == before  # finished runs are read, not retrained
