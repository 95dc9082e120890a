"""`dgc bench --ablation`: its steps end at `dgc`, and it trains only the steps in between."""

from __future__ import annotations

import json
from pathlib import Path

from dgc.bench import ablation
from dgc.bench.benchmark import bench_config
from dgc.cli import main
from dgc.config import flatten

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


def test_ablation_trains_the_steps_between_and_tabulates(tmp_path: Path, capsys) -> None:
    bench = tmp_path / "bench"
    common = ["--exp", "digits", "--seeds", "1", "--epochs", "1", "--exact", "--set",
              "predict.samples=1", "--set", "train.pretrain_batch=200", "--threads", "1",
              "--quiet", "--methods", "dgc-faithful,dgc", "--out", str(bench)]
    assert main(["bench", *common]) == 0
    ends = {p: p.stat().st_mtime_ns for p in bench.glob("*/metrics.json")}
    assert main(["bench", *common, "--ablation"]) == 0
    assert {p: p.stat().st_mtime_ns for p in bench.glob("*/metrics.json")} == ends
    out = bench / "ablation"
    record = json.loads((bench / "ablation.json").read_text())
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
    table = (bench / "ablation.md").read_text()
    assert table.count("\n| ") == 1 + len(ablation.STEPS)  # header and one row per step
    assert table in capsys.readouterr().out

    # a second call trains nothing; a step whose run is gone trains again
    steps = {p: p.stat().st_mtime_ns for p in out.glob("*/*/metrics.json")}
    assert main(["bench", *common, "--ablation"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*/metrics.json")} == steps


def test_ablation_needs_both_ends(tmp_path: Path, capsys) -> None:
    assert main(["bench", "--exp", "digits", "--methods", "dgc", "--ablation",
                 "--out", str(tmp_path / "b")]) == 2
    assert "give both in --methods" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
