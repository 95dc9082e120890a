"""Tests for dgc.bench.benchmark and `dgc bench`: seeds and methods, t-tests, tables,
resumable runs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

import dgc.bench.series
from dgc.bench.benchmark import (
    bench_config,
    paired_tests,
    parse_methods,
    parse_seeds,
    render_table,
    summarise,
)
from dgc.cli import main
from dgc.config import build_config
from dgc.core.errors import DGCError
from dgc.core.tables import paired_p_value
from dgc.data import DATASETS
from dgc.methods.registry import METHODS

BENCH_ARGS = ["--exp", "digits", "--methods", "dgc,ce", "--seeds", "1-2", "--epochs", "2",
              "--set", "predict.samples=1", "--set", "train.pretrain_batch=200", "--threads",
              "1", "--quiet"]


# -- parsing ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seeds"), [
    ("1-5", [1, 2, 3, 4, 5]), ("7,8", [7, 8]), ("1-3,7", [1, 2, 3, 7]), ("4", [4]),
    (" 2 - 3 , 9", [2, 3, 9]), ("3,1-4", [3, 1, 2, 4]), ("5-5", [5]),
])
def test_parse_seeds(text: str, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(("text", "message"), [
    ("", "written like"), ("a", "written like"), ("1-", "written like"), ("1,,2", "written like"),
    ("1-2-3", "written like"), ("5-1", "runs backwards"), ("1.5", "written like"),
])
def test_parse_seeds_errors(text: str, message: str) -> None:
    with pytest.raises(DGCError, match=message):
        parse_seeds(text)


def test_parse_methods() -> None:
    assert parse_methods("all") == list(METHODS)
    assert parse_methods("ce, dgc,ce") == ["ce", "dgc"]
    with pytest.raises(DGCError, match="unknown method.*svm"):
        parse_methods("dgc,svm")
    with pytest.raises(DGCError, match="comma-separated"):
        parse_methods(" , ")


def test_harness_is_the_same_for_every_method(tmp_path: Path) -> None:
    configs = {m: bench_config("fashion", m, 3, tmp_path) for m in ("dgc", "dgc-faithful", "ce")}
    epochs = build_config("fashion", "cpu").train.epochs
    for cfg in configs.values():
        t = cfg.train
        assert (t.val_fraction, t.augment, t.schedule, t.epochs) == (0.1, True, "cosine", epochs)
        assert cfg.seed == 3 and cfg.out == str(tmp_path / f"{cfg.method}-s3")
    assert configs["dgc"].train.batch_size == configs["ce"].train.batch_size
    expected = {"ce": "manual", "dgc": "manual", "dgc-faithful": "manual_released"}
    for method, schedule in expected.items():  # `dgc` augments by itself outside a bench
        off = bench_config("fashion", method, 3, tmp_path, recipe=False,
                           overrides=["train.epochs=4"])
        assert (off.train.augment, off.train.schedule, off.train.epochs) == (False, schedule, 4)


# -- statistics -------------------------------------------------------------------------------

def test_paired_t_test_matches_the_closed_form_and_scipy() -> None:
    a = [0.81, 0.79, 0.84]
    b = [0.78, 0.80, 0.80]
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(d) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / 2)
    t = mean / (sd / math.sqrt(3))
    # with 2 degrees of freedom the two-sided p-value is 1 − |t| / sqrt(t² + 2)
    assert paired_p_value(a, b) == pytest.approx(1 - abs(t) / math.sqrt(t * t + 2), rel=1e-9)
    a5, b5 = [0.9, 0.8, 0.85, 0.7, 0.95], [0.85, 0.82, 0.8, 0.6, 0.9]
    assert paired_p_value(a5, b5) == pytest.approx(stats.ttest_rel(a5, b5).pvalue, rel=1e-12)
    assert paired_p_value([0.5], [0.4]) is None
    assert paired_p_value([0.5, 0.6], [0.5, 0.6]) is None  # every difference zero
    with pytest.raises(ValueError):
        paired_p_value([1.0, 2.0], [1.0])


def run(method: str, seed: int, acsa: float, ece: float | None = 0.1) -> dict[str, Any]:
    metrics = {"acsa": acsa, "f_macro": acsa - 0.01, "g_macro": acsa + 0.05, "r_mi": 0.5,
               "p_ma": 0.6, "seconds_train": 10.0 * seed, "seconds_predict": 1.0}
    if ece is not None:
        metrics["ece"] = ece
    return {"method": method, "seed": seed, "metrics": metrics, "seconds_train": 10.0 * seed,
            "seconds_predict": 1.0, "split_sha256": f"s{seed}", "n_params": 1}


def test_tests_pair_by_seed() -> None:
    runs = [run("dgc", 1, 0.8), run("dgc", 2, 0.82), run("dgc", 3, 0.85),
            run("ce", 3, 0.80), run("ce", 1, 0.75), run("ce", 2, 0.79),
            run("focal", 1, 0.7)]
    tests = paired_tests(runs, ["dgc", "ce", "focal"])
    assert tests["acsa"]["ce"] == pytest.approx(
        stats.ttest_rel([0.8, 0.82, 0.85], [0.75, 0.79, 0.80]).pvalue)
    assert tests["acsa"]["focal"] is None  # one shared seed
    assert set(tests) == {"acsa", "f_macro", "g_macro", "r_mi", "p_ma", "ece"}
    assert "dgc" not in tests["acsa"]
    assert paired_tests(runs, ["ce", "focal"]) == {}


def test_table_marks_best_one_seed_and_published_rows() -> None:
    runs = [run("dgc", 1, 0.80, ece=0.05), run("dgc", 2, 0.84, ece=0.07),
            run("ce", 1, 0.70, ece=0.02), run("ce", 2, 0.72, ece=0.03), run("ros", 1, 0.75)]
    methods = ["dgc", "ce", "ros"]
    summary = summarise(runs, methods)
    assert summary["dgc"]["acsa"]["mean"] == pytest.approx(0.82)
    assert summary["dgc"]["acsa"]["std"] == pytest.approx(math.sqrt(0.0008))
    assert summary["ros"]["acsa"] == {"mean": 0.75, "std": None, "n": 1}
    results = {"exp": "fashion", "preset": "cpu", "recipe": True, "methods": methods,
               "seeds": [1, 2], "runs": runs, "summary": summary,
               "tests": paired_tests(runs, methods), "failed": []}
    table = render_table(results)
    sections = {part.split("\n", 1)[0]: part for part in table.split("## ")[1:]}
    table2 = sections["Table 2: class-balanced metrics"].splitlines()
    assert "| `dgc` | 2 | **0.8200 ± 0.0283** | **0.8100 ± 0.0283** | **0.8700 ± 0.0283** |" \
        in table2
    assert "| `ros` | 1 | 0.7500 ± n/a | 0.7400 ± n/a | 0.8000 ± n/a |" in table2
    assert "**0.0250 ± 0.0071**" in sections[
        "Table 3: minority recall, majority precision and calibration"]  # lowest ECE is best
    assert "published" not in table and "mirrors" not in table
    assert ("last-epoch weights; each prediction the mean over the image's eight mirrors and 90° "
            "rotations, for every method.") in render_table({**results, "keep": "last",
                                                             "views": "dihedral"})
    tests = sections["Paired t-tests: `dgc` against each method"].splitlines()
    p = stats.ttest_rel([0.80, 0.84], [0.70, 0.72]).pvalue
    assert any(line.startswith(f"| `ce` | {p:.3g} |") for line in tests)
    assert "| `ros` | n/a | n/a | n/a | n/a | n/a | n/a |" in tests

    paper = render_table(results, paper=True)
    assert "| DGC (published) |  | 0.8364 ± 0.00 | 0.8314 ± 0.00 | 0.9010 ± 0.00 |" in paper
    assert "| GAMO (published) |  | — | 0.6165 | — |" in paper  # best published P_MA
    assert "| BayesCNN (published) |  | 0.8474 | — | — |" in paper
    assert "**0.8364" not in paper  # published rows are not ranked


# -- whole benchmarks on digits ---------------------------------------------------------------

@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "b"
    assert main(["bench", *BENCH_ARGS, "--out", str(out)]) == 0
    return out


def test_bench_writes_results_and_table(bench_dir: Path) -> None:
    results = json.loads((bench_dir / "results.json").read_text())
    pairs = [(r["method"], r["seed"]) for r in results["runs"]]
    assert pairs == [("dgc", 1), ("ce", 1), ("dgc", 2), ("ce", 2)]
    for record in results["runs"]:
        run_dir = bench_dir / f"{record['method']}-s{record['seed']}"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        assert record["metrics"] == metrics
        assert record["seconds_train"] == metrics["seconds_train"] > 0
        assert record["seconds_predict"] == metrics["seconds_predict"]
        assert record["split_sha256"] == config["split_sha256"]
        assert record["n_params"] == config["n_params"] > 0
        assert "ece" in metrics
        assert config["train"]["augment"] and config["train"]["schedule"] == "cosine"
        assert config["train"]["val_fraction"] == 0.1 and config["train"]["epochs"] == 2
    sha = {(r["method"], r["seed"]): r["split_sha256"] for r in results["runs"]}
    assert sha["dgc", 1] == sha["ce", 1] != sha["dgc", 2] == sha["ce", 2]
    assert set(results["tests"]) == {"acsa", "f_macro", "g_macro", "r_mi", "p_ma", "ece"}
    assert set(results["tests"]["acsa"]) == {"ce"}
    assert results["failed"] == [] and results["recipe"] is True
    table = (bench_dir / "table.md").read_text()
    for heading in ("Table 2", "Table 3", "seconds per seed", "Paired t-tests"):
        assert heading in table
    assert "| `dgc` | 2 |" in table and "| `ce` | 2 |" in table
    assert results["crop_pad"] == 0 and "no random crop" in table  # digits' 8×8 images


def test_bench_rerun_skips_finished_pairs(bench_dir: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []
    real = dgc.bench.series.train_run

    def counting(cfg: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append((cfg.method, cfg.seed))
        return real(cfg, **kwargs)

    monkeypatch.setattr(dgc.bench.series, "train_run", counting)
    metrics = {p: p.stat().st_mtime_ns for p in bench_dir.glob("*/metrics.json")}
    assert main(["bench", *BENCH_ARGS, "--out", str(bench_dir)]) == 0
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in bench_dir.glob("*/metrics.json")} == metrics

    # an unfinished pair is the only one run again
    (bench_dir / "ce-s2" / "metrics.json").unlink()
    assert main(["bench", *BENCH_ARGS, "--out", str(bench_dir)]) == 0
    assert calls == [("ce", 2)]
    results = json.loads((bench_dir / "results.json").read_text())
    assert len(results["runs"]) == 4


def test_bench_refuses_finished_runs_with_other_settings(
        bench_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    epochs = BENCH_ARGS.index("--epochs") + 1
    args = [*BENCH_ARGS[:epochs], "3", *BENCH_ARGS[epochs + 1:]]
    assert main(["bench", *args, "--out", str(bench_dir)]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "train.epochs: 2 -> 3" in err


def recollect_edited(bench_dir: Path, copy: Path, run: str, old: str, new: str,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Copy the benchmark, edit one run's config.json, and collect it again (never retraining)."""
    shutil.copytree(bench_dir, copy)
    config = copy / run / "config.json"
    config.write_text(config.read_text().replace(old, new))
    assert new in config.read_text()
    monkeypatch.setattr(dgc.bench.series, "train_run", lambda *_, **__: pytest.fail("retrained"))
    assert main(["bench", *BENCH_ARGS, "--out", str(copy)]) == 0


def test_bench_counts_runs_finished_on_another_device(
        bench_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs trained on a lent GPU are collected on the CPU: the device is not a setting."""
    copy = tmp_path / "bench"
    recollect_edited(bench_dir, copy, "ce-s1", '"device": "cpu"', '"device": "cuda"', monkeypatch)
    runs = json.loads((copy / "results.json").read_text())["runs"]
    assert [r["device"] for r in runs] == ["cpu", "cuda", "cpu", "cpu"]
    table = (copy / "table.md").read_text()
    assert "| `ce` |" in table and "| cpu (1 thread); cuda |" in table and "Not every run" in table
    assert "Not every run" not in (bench_dir / "table.md").read_text()


def test_bench_flags_runs_with_other_thread_counts(
        bench_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread count is not a setting either, but it changes a seed's numbers on the CPU."""
    copy = tmp_path / "bench"
    recollect_edited(bench_dir, copy, "dgc-s2", '"threads": 1', '"threads": 2', monkeypatch)
    runs = json.loads((copy / "results.json").read_text())["runs"]
    assert [r["trained_on"] for r in runs] == ["cpu (1 thread)", "cpu (1 thread)",
                                               "cpu (2 threads)", "cpu (1 thread)"]
    table = (copy / "table.md").read_text()
    assert "| `dgc` |" in table and "| cpu (1 thread); cpu (2 threads) |" in table
    assert "same device and thread count" in table


def test_bench_reports_failed_runs_and_keeps_going(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    def failing(cfg: Any, **kwargs: Any) -> dict[str, Any]:
        raise DGCError("the loss became nan")

    monkeypatch.setattr(dgc.bench.series, "train_run", failing)
    assert main(["bench", *BENCH_ARGS, "--out", str(tmp_path)]) == 2
    assert "4 run(s) failed" in capsys.readouterr().err
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["runs"] == [] and len(results["failed"]) == 4
    assert "Failed, left out" in (tmp_path / "table.md").read_text()


def test_a_failed_pair_leaves_the_others_to_finish(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The other pair still trains and the tables hold it alone (one seed: std n/a); then the
    command names the failed pair and exits 2."""
    real = dgc.bench.series.train_run

    def ce_fails(cfg: Any, **kwargs: Any) -> dict[str, Any]:
        if cfg.method == "ce":
            raise DGCError("the loss became nan")
        return real(cfg, **kwargs)

    monkeypatch.setattr(dgc.bench.series, "train_run", ce_fails)
    seeds = BENCH_ARGS.index("--seeds") + 1
    args = [*BENCH_ARGS[:seeds], "1", *BENCH_ARGS[seeds + 1:]]
    assert main(["bench", *args, "--out", str(tmp_path)]) == 2
    assert "1 run(s) failed (ce-s1)" in capsys.readouterr().err
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [("dgc", 1)]
    assert results["failed"] == [{"method": "ce", "seed": 1, "error": "the loss became nan"}]
    assert results["summary"]["dgc"]["acsa"]["std"] is None
    table = (tmp_path / "table.md").read_text()
    assert "| `dgc` | 1 |" in table and "± n/a" in table
    assert "Failed, left out: `ce` seed 1" in table and (tmp_path / "table2.png").is_file()


def test_bench_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *BENCH_ARGS, "--paper", "--out", str(tmp_path)]) == 2
    assert "publishes no numbers for digits" in capsys.readouterr().err
    assert main(["bench", "--exp", "digits", "--methods", "dgc,knn", "--seeds", "1",
                 "--out", str(tmp_path)]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["bench", "--exp", "digits", "--seeds", "3-1", "--out", str(tmp_path)]) == 2
    assert "runs backwards" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_bench_draws_table2(bench_dir: Path) -> None:
    from PIL import Image

    from dgc.reporting import plots

    results = json.loads((bench_dir / "results.json").read_text())
    with Image.open(bench_dir / "table2.png") as image:
        assert image.size == plots.pixel_size("bench")
    rows = json.loads((bench_dir / "table2.json").read_text())["rows"]
    assert [row["method"] for row in rows] == ["dgc", "ce"]
    for row in rows:
        stat = results["summary"][row["method"]]
        assert row["acsa"] == stat["acsa"]["mean"] and row["g_macro_std"] == stat["g_macro"]["std"]
        assert row["seeds"] == 2 and not row["published"]


def test_table2_adds_the_published_rows(tmp_path: Path) -> None:
    from dgc.reporting.plots import plot_bench

    summary = {"dgc": {key: {"mean": 0.9, "std": 0.01, "n": 3}
                       for key in ("acsa", "f_macro", "g_macro")},
               "ce": {key: {"mean": None, "std": None, "n": 0}
                      for key in ("acsa", "f_macro", "g_macro")}}
    results = {"exp": "fashion", "preset": "cpu", "seeds": [1, 2, 3], "summary": summary}
    data = plot_bench(results, tmp_path / "t2.png", DATASETS["fashion"].published)
    names = [row["method"] for row in data["rows"]]
    assert names[0] == "dgc" and "ce" not in names  # a method without finished runs is left out
    assert names[1:] == [f"{n} (published)" for n in DATASETS["fashion"].published]
    assert data["rows"][-1]["acsa"] == 0.8364 and data["rows"][-1]["published"]
    assert (tmp_path / "t2.png").is_file() and (tmp_path / "t2.json").is_file()
    with pytest.raises(DGCError, match="no finished runs"):
        plot_bench({**results, "summary": {"ce": summary["ce"]}}, tmp_path / "none.png")
