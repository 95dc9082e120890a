"""Tests for dgc.bench.sweep and `dgc sweep`: a digits sweep of two sampling rates and one seed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import dgc.bench.series
from dgc.bench.sweep import parse_values, run_name, run_sweep, setting_of, summarise
from dgc.cli import main
from dgc.config import RunConfig, apply_overrides, build_config
from dgc.core.errors import DGCError
from dgc.methods.registry import get_method
from dgc.reporting import plots
from dgc.run.folder import LOCK

HEADLINE = ("acsa", "f_macro", "g_macro", "r_mi", "p_ma")
SWEEP = ["sweep", "--exp", "digits", "--param", "sampling-rate", "--values", "1,0", "--seeds", "1",
         "--epochs", "2", "--preset", "cpu", "--quiet", "--set", "train.pretrain_batch=200",
         "--set", "predict.samples=1"]


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def base_config() -> RunConfig:
    """What the fixture's `dgc sweep` command line asks for, before the swept value."""
    cfg = get_method("dgc").configure(build_config("digits", "cpu", method="dgc"))
    return apply_overrides(cfg, ["train.epochs=2", "train.pretrain_batch=200",
                                 "predict.samples=1"])


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dgc sweep` over r = 0 and 1 with seed 1: two 2-epoch digits runs."""
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        code = main([*SWEEP, "--out", str(out)])
    assert code == 0
    assert "sweep.json, sweep.png and sweep.md written" in stdout.getvalue()
    assert "| sampling-rate | runs | ACSA |" in stdout.getvalue()
    return out


def test_sweep_writes_its_runs_json_plot_and_table(swept: Path) -> None:
    record = read(swept / "sweep.json")
    assert record["param"] == "sampling-rate" and record["setting"] == "train.sampling_rate"
    assert record["values"] == [0, 1] and record["seeds"] == [1] and record["epochs"] == 2
    assert [(r["value"], r["seed"], r["dir"]) for r in record["runs"]] == [
        (0, 1, "sampling-rate-0-s1"), (1, 1, "sampling-rate-1-s1")]
    for run in record["runs"]:
        run_dir = swept / run["dir"]
        config = read(run_dir / "config.json")
        assert config["train"]["sampling_rate"] == run["value"]
        assert config["train"]["epochs"] == 2 and config["method"] == "dgc"
        metrics = read(run_dir / "metrics.json")
        assert all(run[k] == metrics[k] for k in HEADLINE)
    for row, run in zip(record["summary"], record["runs"], strict=True):
        assert row["value"] == run["value"] and row["n"] == 1
        assert all(row[k] == {"mean": run[k], "std": None, "n": 1} for k in HEADLINE)
    with Image.open(swept / "sweep.png") as image:
        assert image.size == plots.pixel_size("sweep")
    table = (swept / "sweep.md").read_text()
    assert "| 0 | 1 |" in table and "| 1 | 1 |" in table


def test_second_call_skips_finished_runs(swept: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = read(swept / "sweep.json")

    def must_not_train(*_: Any, **__: Any) -> None:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(dgc.bench.series, "train_run", must_not_train)
    logged: list[str] = []
    record = run_sweep(base_config(), "sampling-rate", [0, 1], [1], swept, progress=False,
                       log=logged.append)
    assert record == before
    assert sum("finished" in line for line in logged) == 2


def test_interrupted_run_resumes_and_changed_settings_are_refused(
        swept: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(swept, copy)
    finished = read(copy / "sweep.json")
    (copy / "sampling-rate-1-s1" / "metrics.json").unlink()  # as if stopped before the end
    killed = copy / "sampling-rate-0-s1"  # as if SIGKILLed before its first epoch was saved
    for path in killed.iterdir():
        if path.name != "config.json":
            path.unlink()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (killed / LOCK).write_text(f"{os.uname().nodename} {dead.pid}\n")
    base = base_config()
    record = run_sweep(base, "sampling-rate", [0, 1], [1], copy, progress=False,
                       log=lambda _: None)
    assert record["runs"] == finished["runs"]  # resumed or redone: the same numbers
    changed = apply_overrides(base, ["train.lr=0.01"])
    with pytest.raises(DGCError, match="other settings .*train.lr"):
        run_sweep(changed, "sampling-rate", [0], [1], copy, progress=False, log=lambda _: None)


def test_runs_finished_on_another_device_are_reused(swept: Path, tmp_path: Path) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(swept, copy)
    config = copy / "sampling-rate-0-s1" / "config.json"
    config.write_text(config.read_text().replace('"device": "cpu"', '"device": "cuda"'))
    assert '"device": "cuda"' in config.read_text()
    record = run_sweep(base_config(), "sampling-rate", [0, 1], [1], copy, progress=False,
                       log=lambda _: None)
    assert record["runs"] == read(swept / "sweep.json")["runs"]


def test_every_finished_run_is_checked_before_anything_trains(
        swept: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "sweep"
    shutil.copytree(swept, copy)
    (copy / "sampling-rate-0-s1" / "metrics.json").unlink()  # the first pair is unfinished

    def train_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a run trained before the finished one was checked")

    monkeypatch.setattr(dgc.bench.series, "train_run", train_run)
    changed = apply_overrides(base_config(), ["train.lr=0.01"])
    with pytest.raises(DGCError, match="sampling-rate-1-s1 was run with other settings"):
        run_sweep(changed, "sampling-rate", [0, 1], [1], copy, progress=False,
                  log=lambda _: None)


def test_a_failed_run_leaves_the_others_to_finish(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A failure no longer aborts the sweep: the other run still trains, the files hold it alone
    (one seed: std n/a) and list the failure, and the command names it and exits 2."""
    real = dgc.bench.series.train_run

    def rate_1_fails(cfg: RunConfig, **kwargs: Any) -> dict[str, Any]:
        if cfg.train.sampling_rate == 1:
            raise DGCError("the loss became nan")
        return real(cfg, **kwargs)

    monkeypatch.setattr(dgc.bench.series, "train_run", rate_1_fails)
    out = tmp_path / "sweep"
    assert main([*SWEEP, "--out", str(out)]) == 2
    assert "1 run(s) failed (sampling-rate-1-s1)" in capsys.readouterr().err
    record = read(out / "sweep.json")
    assert [run["dir"] for run in record["runs"]] == ["sampling-rate-0-s1"]
    assert record["failed"] == [{"value": 1, "seed": 1, "error": "the loss became nan"}]
    zero, one = record["summary"]
    assert (zero["n"], zero["acsa"]["std"], one["n"], one["acsa"]["mean"]) == (1, None, 0, None)
    table = (out / "sweep.md").read_text()
    assert "| 0 | 1 |" in table and "± n/a" in table
    assert "Failed, left out: sampling-rate 1 seed 1" in table and (out / "sweep.png").is_file()


def test_values_params_and_summary() -> None:
    assert parse_values("0.6, 0.2,1,0.2") == [0.2, 0.6, 1]
    for bad in ("0.2,,0.4", "low", "true", "nan", "[1]"):
        with pytest.raises(DGCError, match="comma-separated numbers"):
            parse_values(bad)
    assert setting_of("sampling-rate") == "train.sampling_rate"
    assert setting_of("train.lr") == "train.lr"
    with pytest.raises(DGCError, match="cannot sweep"):
        setting_of("learning-rate")
    assert run_name("sampling-rate", 0.2, 3) == "sampling-rate-0.2-s3"
    runs = [{"value": v, "seed": s, **{k: v + s / 10 for k in HEADLINE}}
            for v in (0.2, 1.0) for s in (1, 2, 3)]
    rows = summarise(runs, [0.2, 1.0])
    assert [r["n"] for r in rows] == [3, 3]
    assert rows[0]["acsa"]["mean"] == pytest.approx(0.4)
    assert rows[1]["g_macro"]["std"] == pytest.approx(np.std([1.1, 1.2, 1.3], ddof=1))


def test_sweep_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["sweep", "--exp", "digits", "--out", str(tmp_path / "s")]
    assert main([*args, "--values", "0.2,x"]) == 2
    assert "comma-separated numbers" in capsys.readouterr().err
    assert main([*args, "--values", "0.2", "--seeds", "3-1"]) == 2
    assert "backwards" in capsys.readouterr().err
    assert main([*args, "--values", "-1"]) == 2
    assert "sampling-rate (train.sampling_rate) must be >= 0" in capsys.readouterr().err
    assert main([*args, "--values", "1", "--param", "model.nothing"]) == 2
    assert "no setting 'nothing'" in capsys.readouterr().err
    assert main([*args, "--values", "0.1,0.1000001"]) == 2  # both would be sampling-rate-0.1
    assert "share the run folder sampling-rate-0.1-s1" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
