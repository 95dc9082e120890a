"""benchmarks/ablation.py: its steps end at `dgc`, and it trains only the steps in between."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from dgc.benchmark import bench_config
from dgc.cli import main
from dgc.config import flatten

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("ablation", ROOT / "benchmarks" / "ablation.py")
ablation = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ablation)
EXACT = ["predict.rule=bayes", "predict.top_k=null", "predict.samples=10"]


def test_the_last_step_is_dgc_and_each_step_changes_one_thing(tmp_path: Path) -> None:
    last = len(ablation.STEPS) - 1
    faithful = flatten(bench_config("fashion", "dgc-faithful", 1, tmp_path, overrides=EXACT)
                       .to_dict())
    all_steps = flatten(bench_config("fashion", "dgc-faithful", 1, tmp_path,
                                     overrides=EXACT + ablation.step_overrides(last)).to_dict())
    dgc = flatten(bench_config("fashion", "dgc", 1, tmp_path, overrides=EXACT).to_dict())
    assert {k for k in dgc if dgc[k] != all_steps[k]} == {"method", "out"}
    changed = {k for k in dgc if dgc[k] != faithful[k]} - {"method", "out"}
    added = [item.split("=")[0] for _, _, changes in ablation.STEPS for item in changes]
    assert sorted(added) == sorted(changed)  # every difference is some step's, once


def test_ablation_trains_the_steps_between_and_tabulates(tmp_path: Path) -> None:
    bench, out = tmp_path / "bench", tmp_path / "ablation"
    common = ["--exp", "digits", "--seeds", "1", "--epochs", "1", "--exact", "--set",
              "predict.samples=1", "--set", "train.pretrain_batch=200", "--threads", "1",
              "--quiet"]
    assert main(["bench", "--methods", "dgc-faithful,dgc", *common, "--out", str(bench)]) == 0
    ends = {p: p.stat().st_mtime_ns for p in bench.glob("*/metrics.json")}
    command = [sys.executable, str(ROOT / "benchmarks" / "ablation.py"), *common,
               "--bench", str(bench), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    assert {p: p.stat().st_mtime_ns for p in bench.glob("*/metrics.json")} == ends
    record = json.loads((out / "ablation.json").read_text())
    assert [s["step"] for s in record["steps"]] == [n for n, _, _ in ablation.STEPS]
    assert record["missing"] == []
    for k, step in enumerate(record["steps"]):
        assert list(step["metrics"]) == ["1"]
        assert step["summary"]["acsa"]["mean"] == step["metrics"]["1"]["acsa"]
        if k:
            before = record["steps"][k - 1]["summary"]["acsa"]["mean"]
            assert abs(step["delta_acsa"] - (step["summary"]["acsa"]["mean"] - before)) < 1e-12
    assert step["p_acsa"] is None  # one seed: no test
    faithful = json.loads((bench / "dgc-faithful-s1" / "config.json").read_text())
    config = json.loads((out / "3-logit-adjust" / "dgc-faithful-s1" / "config.json").read_text())
    assert (config["train"]["lvo"], config["train"]["logit_adjust_tau"],
            config["model"]["label_in_mean"], config["train"]["lr"]) == (
        False, 1.0, True, faithful["train"]["lr"])
    table = (out / "ablation.md").read_text()
    assert table.count("\n| ") == 1 + len(ablation.STEPS)  # header and one row per step

    # --collect trains nothing: an unfinished run is listed as missing and left alone
    steps = {p: p.stat().st_mtime_ns for p in out.glob("*/*/metrics.json")}
    (out / "4-x-mean" / "dgc-faithful-s1" / "metrics.json").unlink()
    done = subprocess.run([*command, "--collect"], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 0 and "4-x-mean/dgc-faithful-s1" in done.stderr
    assert not (out / "4-x-mean" / "dgc-faithful-s1" / "metrics.json").exists()
    steps.pop(out / "4-x-mean" / "dgc-faithful-s1" / "metrics.json")
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*/metrics.json")} == steps
    assert json.loads((out / "ablation.json").read_text())["steps"][4]["metrics"] == {}
