"""Held-out classes, OOD scores and the `dgc evaluate --calibration / --prior-shift / --ood`
commands on a run and on a whole benchmark, and the studies of experiments/, on a tiny digits
benchmark that holds out classes 8 and 9."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from dgc import DGCClassifier
from dgc.bench.tables import evaluate_bench
from dgc.cli import main
from dgc.core.errors import DGCError
from dgc.core.metrics import acsa
from dgc.data import ImbalancedData
from dgc.data.heldout import hold_out
from dgc.evaluation.capabilities import ood_file
from dgc.evaluation.ood import SOURCES, detection_metrics, ood_images, resize, score_ood, subsample
from dgc.nn.model import images_to_tensor
from dgc.nn.prediction import class_scores
from dgc.run.finished import load_run, run_data

ROOT = Path(__file__).resolve().parents[1]
BENCH_ARGS = ["--exp", "digits", "--methods", "dgc,ce", "--seeds", "1-2", "--epochs", "2",
              "--set", "predict.samples=1", "--set", "train.pretrain_batch=200",
              "--set", "train.held_out=[8,9]", "--threads", "1", "--quiet"]


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("capabilities") / "bench"
    code, _, stderr = run_cli(["bench", *BENCH_ARGS, "--out", str(out)])
    assert code == 0, stderr
    return out


def test_hold_out_renumbers_the_remaining_classes(digits_data: ImbalancedData) -> None:
    kept = hold_out(digits_data, [0, 5])
    assert kept.class_names == tuple(str(c) for c in (1, 2, 3, 4, 6, 7, 8, 9))
    assert kept.train_counts.tolist() == np.delete(digits_data.train_counts, [0, 5]).tolist()
    assert np.bincount(kept.y_train).tolist() == kept.train_counts.tolist()
    assert len(kept.y_test) == 400 and set(kept.y_test.tolist()) == set(range(8))
    assert np.array_equal(kept.x_test[kept.y_test == 4],  # class 6 is now class 4
                          digits_data.x_test[digits_data.y_test == 6])
    assert hold_out(digits_data, []) is digits_data
    for bad in ([10], [1, 1], list(range(9))):
        with pytest.raises(DGCError, match="train.held_out must list distinct"):
            hold_out(digits_data, bad)


def test_a_benchmark_run_never_sees_its_held_out_classes(bench: Path) -> None:
    config = json.loads((bench / "dgc-s1" / "config.json").read_text())
    assert config["train"]["held_out"] == [8, 9]
    assert config["data"]["class_names"] == [str(c) for c in range(8)]
    metrics = json.loads((bench / "ce-s1" / "metrics.json").read_text())
    assert [row["support"] for row in metrics["per_class"]] == [50] * 8
    for bad, message in (("eight", "takes a whole number"), ("-1", "class indices")):
        code, _, stderr = run_cli(["train", "--exp", "digits", "--epochs", "1", "--set",
                                   f"train.held_out={bad}", "--out", str(bench / "bad")])
        assert code == 2 and "train.held_out" in stderr and message in stderr, stderr
        assert not (bench / "bad").exists()


def test_detection_metrics() -> None:
    known, novel = np.arange(100.0), np.arange(100.0) + 1000
    assert detection_metrics(known, novel) == {"auroc": 1.0, "aupr": 1.0, "fpr95": 0.0}
    swapped = detection_metrics(novel, known)
    assert swapped["auroc"] == 0.0 and swapped["fpr95"] == 1.0
    # half the novel images score like the known ones: 95 % TPR flags every known image
    mixed = detection_metrics(known, np.r_[known[:50], novel[:50]])
    assert mixed["fpr95"] == 1.0 and 0.5 < mixed["auroc"] < 1.0


def test_novel_sets_and_scores(bench: Path) -> None:
    run = load_run(bench / "dgc-s1")
    data = run_data(run.cfg)
    images = {source: ood_images(source, run, data) for source in SOURCES if source != "digits"}
    assert len(images["heldout"]) == 100  # the test images of classes 8 and 9
    assert all(x.dtype == np.uint8 and x.shape[1:] == (8, 8, 1) for x in images.values())
    assert np.array_equal(images["inverted"], 255 - data.x_test)
    with pytest.raises(DGCError, match="trained on digits"):
        ood_images("digits", run, data)
    nothing_held = dataclasses.replace(run, cfg=dataclasses.replace(
        run.cfg, train=dataclasses.replace(run.cfg.train, held_out=())))
    with pytest.raises(DGCError, match="this run held out no classes"):
        ood_images("heldout", nothing_held, data)
    assert resize(np.zeros((2, 8, 8), np.uint8), (28, 28, 3)).shape == (2, 28, 28, 3)

    known = score_ood(run, data.x_test)
    assert list(known) == ["msp", "evidence", "recon", "latent"]
    again = score_ood(run, data.x_test[:7])  # a row's scores do not depend on the batch
    assert all(np.allclose(again[k], known[k][:7]) for k in known)
    # the scores are the exact Bayes rule's terms, taken over every class
    x = images_to_tensor(data.x_test, "cpu")
    exact = dataclasses.replace(run.cfg.predict, top_k=None)
    recon = class_scores(run.model, x, exact, run.cfg.seed, terms=("recon",))
    bayes = class_scores(run.model, x, exact, run.cfg.seed, terms=("recon", "label"))
    assert np.allclose(known["recon"], -recon.max(1).values.double().numpy(), rtol=1e-5)
    assert np.allclose(known["evidence"], -torch.logsumexp(bayes.double(), 1).numpy(),
                       rtol=1e-5)
    assert np.allclose(known["msp"], -torch.softmax(bayes.double(), 1).max(1).values.numpy(),
                       atol=1e-5)
    assert list(score_ood(load_run(bench / "ce-s1"), data.x_test)) == ["msp", "energy"]
    with pytest.raises(DGCError, match="uint8 images of shape"):
        score_ood(run, data.x_test.astype(np.float32))


def test_evaluate_writes_calibration_shift_and_ood(bench: Path, tmp_path: Path) -> None:
    extra = tmp_path / "blank.npy"
    np.save(extra, np.zeros((5, 8, 8), dtype=np.uint8))
    for method in ("dgc", "ce"):  # baselines too
        run_dir = bench / f"{method}-s2"
        code, stdout, stderr = run_cli(["evaluate", str(run_dir), "--calibration",
                                        "--prior-shift", "--ood", f"heldout,noise,{extra}"])
        assert code == 0, stderr
        assert "| bcts |" in stdout and "| reversed | bcts |" in stdout
        calibration = json.loads((run_dir / "calibration.json").read_text())
        assert list(calibration) == ["none", "temperature", "bcts"]
        shift = json.loads((run_dir / "prior-shift.json").read_text())
        assert shift["train"]["bcts"]["em"]["accuracy"] >= 0
        assert set(shift["dirichlet"]) == {"size", "none", "temperature", "bcts"}
        ood = json.loads((run_dir / ood_file(["heldout", "noise", str(extra)])).read_text())
        assert list(ood["sources"]) == ["heldout", "noise", str(extra)]
        assert ood["sources"]["heldout"]["n_novel"] == 100 and ood["n_known"] == 400


def test_a_file_source_never_takes_another_sources_file(bench: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`--ood mine/noise.npy` wrote ood-noise.json over the built-in noise set's (issue 34)."""
    assert ood_file(["noise"]) == "ood-noise.json"
    assert ood_file(["heldout", "mine/noise.npy"]).startswith("ood-heldout-file-noise-")
    assert len({ood_file([s]) for s in ("noise", "a/noise.npy", "b/noise.npy", "b/noise")}) == 4
    monkeypatch.chdir(tmp_path)
    assert ood_file(["a/noise.npy"]) == ood_file([str(tmp_path / "a" / "noise.npy")])
    run_dir = bench / "ce-s2"
    (tmp_path / "mine").mkdir()
    np.save(tmp_path / "mine" / "noise.npy", np.zeros((5, 8, 8), np.uint8))
    (tmp_path / "noise").mkdir()  # a folder named like a built-in set: `--ood noise` is the set
    for sources in ("noise", "mine/noise.npy"):
        code, _, stderr = run_cli(["evaluate", str(run_dir), "--ood", sources])
        assert code == 0, stderr
    builtin = json.loads((run_dir / "ood-noise.json").read_text())["sources"]["noise"]
    mine = json.loads((run_dir / ood_file(["mine/noise.npy"])).read_text())
    assert builtin["n_novel"] > 5 and mine["sources"]["mine/noise.npy"]["n_novel"] == 5


def test_result_files_are_named_by_the_settings_they_use(bench: Path) -> None:
    """Novelty scores use only S (and a learned prior's weight), a decomposition also bf16:
    settings they ignore do not name their files, and those they use never replace another's."""
    run_dir = bench / "dgc-s2"
    samples = load_run(run_dir).cfg.predict.samples
    for extra, name in (([], "ood-noise.json"), (["--top-k", "1", "--bf16"], "ood-noise.json"),
                        (["--samples", str(samples + 1)], f"ood-noise-s{samples + 1}.json")):
        (run_dir / name).unlink(missing_ok=True)
        code, _, stderr = run_cli(["evaluate", str(run_dir), "--ood", "noise", *extra])
        assert code == 0, stderr
        assert (run_dir / name).is_file()
    for extra, name in (([], "decomposition-s1.json"), (["--bf16"], "decomposition-s1-bf16.json")):
        code, _, stderr = run_cli(["evaluate", str(run_dir), "--decompose", "--samples", "1",
                                   *extra])
        assert code == 0, stderr
        assert (run_dir / name).is_file()


def test_an_ood_limit_scores_one_fixed_subset_for_every_run(bench: Path) -> None:
    images = np.arange(300).reshape(100, 3)
    rows = subsample(images, 40)
    assert len(rows) == 40 and np.array_equal(rows, subsample(images, 40))
    assert np.all(np.diff(rows[:, 0]) > 0)  # in their order, without repeats
    assert subsample(images, 100) is images and subsample(images, None) is images
    run_dir = bench / "dgc-s2"
    code, stdout, stderr = run_cli(["evaluate", str(run_dir), "--ood", "heldout,inverted",
                                    "--ood-limit", "60"])
    assert code == 0, stderr
    limited = json.loads((run_dir / "ood-heldout-inverted-n60.json").read_text())
    assert limited["n_known"] == 60 and limited["limit"] == 60
    assert [limited["sources"][s]["n_novel"] for s in ("heldout", "inverted")] == [60, 60]
    run = load_run(run_dir)
    data = run_data(run.cfg)
    known = score_ood(run, subsample(data.x_test, 60))["recon"]
    by_path = score_ood(str(run_dir), subsample(data.x_test, 60))  # as README shows it
    assert np.array_equal(by_path["recon"], known) and set(by_path) == {
        "msp", "evidence", "recon", "latent"}
    novel = score_ood(run, subsample(ood_images("heldout", run, data), 60))["recon"]
    assert limited["sources"]["heldout"]["recon"] == pytest.approx(
        detection_metrics(known, novel))
    for bad in (["--ood-limit", "0", "--ood", "noise"], ["--calibration", "--ood-limit", "5"]):
        code, _, stderr = run_cli(["evaluate", str(run_dir), *bad])
        assert code == 2 and "give a positive number of images, with --ood" in stderr


def test_evaluate_refuses_an_unknown_source_before_writing(bench: Path) -> None:
    run_dir = bench / "ce-s1"
    code, _, stderr = run_cli(["evaluate", str(run_dir), "--calibration", "--ood", "mnist"])
    assert code == 2 and stderr.count("\n") == 1 and "unknown OOD source 'mnist'" in stderr
    assert not list(run_dir.glob("calibration*.json")) and not list(run_dir.glob("ood*.json"))
    code, _, stderr = run_cli(["evaluate", str(bench / "dgc-s1"), "--calibration",
                               "--decompose"])
    assert code == 2 and "--decompose re-scores" in stderr


def test_other_prediction_settings_get_their_own_files(bench: Path) -> None:
    run_dir = bench / "dgc-s1"
    for args in ([], ["--samples", "2"]):
        code, stdout, stderr = run_cli(["evaluate", str(run_dir), "--calibration", *args])
        assert code == 0, stderr
    own = json.loads((run_dir / "calibration.json").read_text())
    other = json.loads((run_dir / "calibration-bayes-s2-top2.json").read_text())
    assert own["none"]["nll"] != other["none"]["nll"]  # S = 2 scores differ from S = 1's
    code, _, stderr = run_cli(["evaluate", str(bench / "ce-s1"), "--calibration", "--samples",
                               "2"])  # a baseline has no prediction settings to vary
    assert code == 0 and (bench / "ce-s1" / "calibration.json").is_file()
    assert not list((bench / "ce-s1").glob("calibration-*.json"))


@pytest.mark.parametrize(("options", "table", "heading"), [
    (["--calibration"], "calibration", "## Bias-corrected temperature scaling"),
    (["--prior-shift"], "prior-shift", "## Test prior: dirichlet"),
    (["--ood", "heldout,inverted"], "ood-heldout-inverted", "## Novel set: heldout"),
    (["--ood", "heldout", "--ood-limit", "50"], "ood-heldout-n50", "the same fixed random 50"),
])
def test_evaluate_tabulates_every_run_of_a_benchmark(bench: Path, options: list[str], table: str,
                                                     heading: str) -> None:
    code, stdout, stderr = run_cli(["evaluate", str(bench), *options])
    assert code == 0, stderr
    text = (bench / f"{table}.md").read_text()
    assert text in stdout
    assert heading in text and "| `dgc" in text and "| `ce" in text
    record = json.loads((bench / f"{table}.json").read_text())
    assert {(r["method"].split("/")[0], r["seed"]) for r in record["runs"]} == {
        (m, s) for m in ("dgc", "ce") for s in (1, 2)}
    tests = [t for section in record["sections"].values() for t in section["tests"].values()]
    assert tests and all(cell["n"] == 2 for t in tests for cell in t.values())
    assert (bench / "dgc-s1" / f"{table}.json").is_file()  # each run's own report beside it


@pytest.mark.parametrize(("options", "message"), [
    ([], "name what to tabulate over its runs"),
    (["--calibration", "--samples", "2"], "apply to one run"),
    (["--decompose"], "apply to one run"),
    (["--ood", "noise,mine.npy"], "--ood mine.npy: a benchmark is scored on the built-in"),
    (["--ood", "noise", "--ood-limit", "0"], "give a positive number of images"),
])
def test_evaluate_refuses_what_a_benchmark_cannot_tabulate(bench: Path, options: list[str],
                                                           message: str) -> None:
    code, _, stderr = run_cli(["evaluate", str(bench), *options])
    assert code == 2 and message in stderr
    code, _, stderr = run_cli(["evaluate", str(bench / "dgc-s1"), "--oversampling", str(bench)])
    assert code == 2 and "apply to a `dgc bench` folder" in stderr


def test_a_benchmark_reuses_reports_newer_than_the_weights(bench: Path) -> None:
    evaluated = []

    def evaluate(run_dir: Path, run: object) -> dict:
        evaluated.append(run_dir.name)
        return {"computed": run_dir.name}

    first = evaluate_bench(bench, evaluate, "test", "reuse-test.json")
    assert sorted(evaluated) == ["ce-s1", "ce-s2", "dgc-s1", "dgc-s2"]
    for _, _, report in first:  # as the scripts' evaluate functions do
        (bench / report["computed"] / "reuse-test.json").write_text(json.dumps({"saved": 1}))
    evaluated.clear()
    assert [r for _, _, r in evaluate_bench(bench, evaluate, "test", "reuse-test.json")] \
        == [{"saved": 1}] * 4 and not evaluated
    best = bench / "ce-s1" / "best.pt"  # weights newer than the report: scored again
    later = (bench / "ce-s1" / "reuse-test.json").stat().st_mtime + 10
    os.utime(best, (later, later))
    evaluate_bench(bench, evaluate, "test", "reuse-test.json")
    assert evaluated == ["ce-s1"]
    evaluated.clear()
    evaluate_bench(bench, evaluate, "test", "reuse-test.json", recompute=True)
    assert len(evaluated) == 4


def test_estimator_flags_rows_unlike_its_training_data() -> None:
    x, y = load_digits(return_X_y=True)
    clf = DGCClassifier(epochs=10, random_state=0).fit(x[:600], y[:600])
    known = clf.score_ood(x[600:900])
    novel = clf.score_ood(np.random.default_rng(0).uniform(0, 16, size=(300, 64)))
    assert list(known) == ["msp", "evidence", "recon", "latent"]
    assert detection_metrics(known["recon"], novel["recon"])["auroc"] > 0.95
    again = clf.score_ood(x[600:605])  # float64 tables: a row's scores ignore its neighbours
    assert all(np.allclose(again[k], known[k][:5]) for k in known)
    with pytest.raises(DGCError, match="features"):
        clf.score_ood(x[:3, :10])


def test_recon_weight_script_chooses_on_validation(bench: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "recon_weight.py"),
                           str(bench / "dgc-s1"), str(bench / "dgc-s2"), "--weights", "0,10"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| 0", "| 10", "| 1", "| recon alone"]
    assert "validation chooses w = " in done.stdout and "paired p" in done.stdout


def test_posterior_codes_script_reports_the_terms_spread_and_chooses_a_scale(bench: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "posterior_codes.py"),
                           str(bench / "dgc-s1"), str(bench / "dgc-s2"), "--scales", "1",
                           "--samples", "3"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    values = dict(row.strip("| ").split(" | ")[:2]
                  for row in done.stdout.splitlines() if row.startswith("| ") and "---" not in row)
    assert float(values["class gap"].split(" ± ")[0]) == 0.0  # `dgc`: μ from the image alone
    assert float(values["label spread"].split(" ± ")[0]) > 0.0
    assert set(values) >= {"code std", "median sigma", "recon spread", "0", "1"}
    chosen = done.stdout.split("validation chooses s = ")[1].split(":")[0]
    assert float(values[chosen]) == max(float(values["0"]), float(values["1"]))
    assert "at s = 0 (paired p" in done.stdout


@pytest.mark.parametrize(("script", "wanted"), [
    ("recon_weight.py", "dgc"), ("posterior_codes.py", "dgc"), ("prior_shift.py", "dgc"),
    ("prediction_settings.py", "dgc"), ("latent_weight.py", "dgcmm")])
def test_dgc_scripts_refuse_a_baseline_run(bench: Path, script: str, wanted: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / script),
                           str(bench / "ce-s1")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode != 0
    assert ("holds a ce classifier, which has no encoder or decoder; "
            f"give `{wanted}` runs") in done.stderr
    assert "Traceback" not in done.stderr


def script_table(script: str, *args: str) -> dict[str, list[str]]:
    """Run a study of experiments/ and return its Markdown table rows by their first cell."""
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / script), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    cells = [row.strip("| ").split(" | ") for row in done.stdout.splitlines()
             if row.startswith("| ") and "---" not in row]
    return {row[0]: row[1:] for row in cells[1:]}


def test_prior_shift_script_at_tau_zero_is_the_bayes_rule(bench: Path) -> None:
    runs = [bench / "dgc-s1", bench / "dgc-s2"]
    table = script_table("prior_shift.py", *map(str, runs), "--taus", "0,1")
    assert list(table) == ["0", "1"]
    plain, right = [], []
    for run_dir in runs:
        run = load_run(run_dir)
        data = run_data(run.cfg)
        cfg = dataclasses.replace(run.cfg.predict, samples=1, top_k=None)
        scores = class_scores(run.generator, images_to_tensor(data.x_test, run.cfg.device), cfg,
                              seed=run.cfg.seed)
        plain.append(acsa(data.y_test, scores.argmax(1).numpy()))
        right.append(np.mean(scores.argmax(1).numpy() == data.y_test))
    assert float(table["0"][1]) == pytest.approx(np.mean(plain), abs=5e-5)
    assert float(table["0"][3]) == pytest.approx(np.mean(right), abs=5e-5)


def test_prediction_settings_script_chooses_a_bayes_setting_near_the_exact_rule(
        bench: Path, tmp_path: Path) -> None:
    table = script_table("prediction_settings.py", str(bench / "dgc-s1"), "--json",
                         str(tmp_path / "settings.json"))
    record = json.loads((tmp_path / "settings.json").read_text())
    assert list(table) == list(record["table"]) and "exact S=10" in table
    assert float(table["exact S=10"][1]) == 0.0
    chosen = record["table"][record["chosen"]]
    assert record["chosen"] not in ("top-1 S=10", "label S=10", "label S=1")
    assert chosen["acsa"] >= record["table"]["exact S=10"]["acsa"] - 0.002
    assert chosen["images_per_s"] >= record["table"]["exact S=10"]["images_per_s"]


def test_latent_weight_script_scores_a_learned_prior_and_refuses_a_plain_dgc(
        bench: Path, tmp_path: Path) -> None:
    out = tmp_path / "dgcmm"
    code, _, stderr = run_cli(["train", "--exp", "digits", "--method", "dgcmm", "--epochs", "1",
                               "--set", "predict.samples=1", "--threads", "1", "--quiet",
                               "--out", str(out)])
    assert code == 0, stderr
    table = script_table("latent_weight.py", str(out), "--weights", "0,1")
    assert list(table) == ["0", "1"] and all(0 <= float(v[0]) <= 1 for v in table.values())
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "latent_weight.py"),
                           str(bench / "dgc-s1")], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode != 0 and "has no learned prior" in done.stderr


def test_profile_training_script_times_steps_and_names_operators() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "profile_training.py"),
                           "--exp", "digits", "--steps", "2", "--warmup", "1", "--threads", "1",
                           "--rows", "5"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "dgc on digits (cpu preset), batch" in done.stdout and "ms per step" in done.stdout
    assert "Self CPU" in done.stdout and "aten::" in done.stdout
    timed = subprocess.run([sys.executable, str(ROOT / "tools" / "profile_training.py"),
                            "--exp", "digits", "--steps", "3", "--warmup", "1", "--threads", "1",
                            "--timing"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert timed.returncode == 0, timed.stderr
    assert "median" in timed.stdout and "over 3 steps" in timed.stdout
    assert "Self CPU" not in timed.stdout


def test_pixel_floors_script_sits_beside_a_benchmark(bench: Path) -> None:
    """experiments/pixel_floors.py: the floors train on each seed's training split, and the
    table holds every method of the benchmark with them."""
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "pixel_floors.py"),
                           str(bench)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    record = json.loads((bench / "floors.json").read_text())
    assert {(r["method"], r["seed"]) for r in record["floors"]} == {
        (m, s) for m in ("logistic-pca", "gradient-boosting") for s in (1, 2)}
    assert list(record["summary"]) == ["dgc", "ce", "logistic-pca", "gradient-boosting"]
    assert record["summary"]["logistic-pca"]["acsa"]["n"] == 2
    assert all(0 <= r["metrics"]["acsa"] <= 1 for r in record["floors"])
    table = (bench / "floors.md").read_text()
    assert "| `gradient-boosting` | 2 |" in table and "`dgc` against" in table


def test_checkpoint_rule_script_scores_the_kept_and_the_last_weights(bench: Path,
                                                                      tmp_path: Path) -> None:
    """experiments/checkpoint_rule.py on a benchmark's runs: the validation predictions they
    recorded, and with --test the test set under the kept and the last epoch's weights; where
    the kept epoch is the last, the two agree."""
    runs = [bench / f"{method}-s{seed}" for method in ("dgc", "ce") for seed in (1, 2)]
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "checkpoint_rule.py"),
                           *map(str, runs), "--halvings", "10", "--test", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    written = json.loads((tmp_path / "checkpoint-rule.json").read_text())
    for run_dir, row in zip(runs, written["runs"], strict=True):
        kept = json.loads((run_dir / "metrics.json").read_text())
        assert row["test"]["kept"]["acsa"] == pytest.approx(kept["acsa"])
        assert row["rules"]["last"]["epoch"] == 2
        if torch.load(run_dir / "best.pt", weights_only=True)["epoch"] == 2:
            assert row["test"]["last"] == pytest.approx(row["test"]["kept"])
    assert written["test"]["every run"]["kept acsa"]["n"] == 4
    assert "The test set, for the record" in (tmp_path / "checkpoint-rule.md").read_text()


def test_dihedral_views_script_averages_the_views_a_run_trained_on(
        bench: Path, tmp_path: Path) -> None:
    out = tmp_path / "turned"
    code, _, stderr = run_cli(["train", "--exp", "digits", "--method", "ce", "--epochs", "2",
                               "--set", "train.dihedral=true", "--set", "train.keep=last",
                               "--threads", "1", "--quiet", "--out", str(out)])
    assert code == 0, stderr
    table = script_table("dihedral_views.py", str(out), "--json", str(tmp_path / "views.json"))
    assert list(table) == ["image", "mirror", "dihedral"]
    record = json.loads((tmp_path / "views.json").read_text())["runs"][str(out)]
    assert record["dihedral"]["test ACSA"] == pytest.approx(float(table["dihedral"][2][:6]),
                                                             abs=5e-5)
    metrics = json.loads((out / "metrics.json").read_text())  # keep=last: checkpoint.pt's weights
    assert float(table["image"][2].split(" ± ")[0]) == pytest.approx(metrics["acsa"], abs=5e-5)
    assert float(table["image"][3].split(" ± ")[0]) == pytest.approx(metrics["accuracy"],
                                                                      abs=5e-5)
    assert table["image"][-1] == "—" and table["dihedral"][-1] == "n/a"  # one run: no t-test
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "dihedral_views.py"),
                           str(bench / "ce-s1")], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "trained on neither mirrors nor 90° rotations" in done.stderr
