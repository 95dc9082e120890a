"""Nothing lost, nothing silently wrong (docs/RELIABILITY.md, "Run folders and settings"):
run folders that refuse to be overwritten and lock themselves, typed and range-checked
settings, data fingerprints, quietly wrong results and one-line errors, tried on digits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_bad_input import fails_with, snapshot

from dgc.cli import main
from dgc.config import TrainConfig, apply_overrides, build_config, convert, validate
from dgc.core.errors import DGCError
from dgc.core.io import load_checkpoint
from dgc.data import load_imbalanced
from dgc.methods.registry import get_method
from dgc.run.folder import EPOCH_DEPENDENT_SCHEDULES, LOCK, RunDir, check_resume

TRAIN = ["train", "--seed", "1", "--samples", "1", "--quiet", "--no-report", "--threads", "1",
         "--set", "train.pretrain_batch=200", "--set", "train.schedule=constant"]
DIGITS = [*TRAIN, "--exp", "digits", "--epochs", "1"]


def digits_npz(path: Path, drop_test_class: int | None = None) -> Path:
    """The imbalanced digits split as an .npz; optionally without one class's test images."""
    data = load_imbalanced("digits", 1)
    keep = data.y_test != drop_test_class
    np.savez(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test[keep],
             y_test=data.y_test[keep])
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run on digits saved as an .npz whose test set lacks class 9."""
    folder = tmp_path_factory.mktemp("finished")
    data = digits_npz(folder / "digits.npz", drop_test_class=9)
    out = folder / "run"
    assert main([*TRAIN, "--epochs", "1", "--data", str(data), "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_dir(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished run with its data file beside it (the run names the original)."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


# -- a finished run is never overwritten --------------------------------------------------------

def test_a_folder_holding_a_run_is_refused(run_dir: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(run_dir)
    fails_with([*DIGITS, "--out", str(run_dir)], "holds a finished run; continue it with "
               "--resume, move it aside and start again with --overwrite", capsys)
    fails_with([*DIGITS, "--resume", "--overwrite", "--out", str(run_dir)], "give one of them",
               capsys)
    (run_dir / "metrics.json").unlink()  # an unfinished (killed) run is protected as well
    fails_with([*DIGITS, "--out", str(run_dir)], "holds an unfinished run", capsys)
    before.pop("metrics.json")
    assert snapshot(run_dir) == before


def test_overwrite_moves_the_old_run_aside(run_dir: Path) -> None:
    before = snapshot(run_dir)
    assert main([*DIGITS, "--overwrite", "--out", str(run_dir)]) == 0
    aside = run_dir.with_name("run.old-1")
    assert snapshot(aside) == before
    assert (run_dir / "metrics.json").is_file() and not (run_dir / LOCK).exists()
    assert main([*DIGITS, "--overwrite", "--out", str(run_dir)]) == 0
    assert run_dir.with_name("run.old-2").is_dir() and snapshot(aside) == before


def test_overwrite_moves_nothing_when_a_late_check_refuses(
        run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A generator run that does not exist is found only when the trainer is built: the old
    run must still be where it was."""
    before = snapshot(run_dir)
    fails_with([*DIGITS, "--method", "ce", "--set", "baseline.resample=dgc", "--set",
                f"baseline.generator={tmp_path / 'typo-s{seed}'}", "--overwrite", "--out",
                str(run_dir)], "typo-s1", capsys)
    assert snapshot(run_dir) == before
    assert not run_dir.with_name("run.old-1").exists()


def test_a_locked_folder_is_refused_and_a_stale_lock_taken_over(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    host = os.uname().nodename
    (out / LOCK).write_text(f"{host} {os.getpid()}\n")  # a live process: this one
    fails_with([*DIGITS, "--out", str(out)], f"is in use by process {os.getpid()}", capsys)
    assert os.listdir(out) == [LOCK]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK).write_text(f"{host} {dead.pid}\n")
    assert main([*DIGITS, "--out", str(out)]) == 0
    assert (out / "metrics.json").is_file() and not (out / LOCK).exists()


def test_the_lock_is_held_while_the_run_lives(tmp_path: Path) -> None:
    held = RunDir(tmp_path / "run")
    with held.lock():
        assert (tmp_path / "run" / LOCK).read_text().split()[1] == str(os.getpid())
        with pytest.raises(DGCError, match="in use by process"), RunDir(tmp_path / "run").lock():
            pass
    assert not (tmp_path / "run").exists()  # created empty, so removed again


def test_a_stale_lock_is_taken_over_once(tmp_path: Path) -> None:
    """Two commands that read the same dead owner: the second, finding the lock replaced by
    the first's, leaves it (and is then refused), and waits while another takes over."""
    import fcntl
    import threading

    folder = RunDir(tmp_path / "run")
    folder.path.mkdir()
    lock = folder.path / LOCK
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = f"{os.uname().nodename} {dead.pid}\n"
    live = f"{os.uname().nodename} {os.getpid()}\n"
    lock.write_text(live)  # the first command took it over after both read `stale`
    folder._remove_stale(lock, stale)
    assert lock.read_text() == live
    with pytest.raises(DGCError, match=f"in use by process {os.getpid()}"), folder.lock():
        pass

    lock.write_text(stale)
    busy = os.open(folder.path, os.O_RDONLY)
    fcntl.flock(busy, fcntl.LOCK_EX)  # another command is taking the folder over
    remover = threading.Thread(target=folder._remove_stale, args=(lock, stale))
    remover.start()
    remover.join(0.3)
    assert remover.is_alive() and lock.read_text() == stale  # it waits for the other
    os.close(busy)
    remover.join(10)
    assert not remover.is_alive() and not lock.exists()


# -- nothing is written before every setting is checked -------------------------------------

@pytest.mark.parametrize(("options", "message"), [
    (["--lr", "nan"], "--lr (train.lr) is nan; expected a finite number"),
    (["--sampling-rate", "inf"], "--sampling-rate (train.sampling_rate) is inf; expected a"),
    (["--grad-clip", "-1"], "--grad-clip (train.grad_clip) must be positive"),
    (["--samples", "0"], "--samples (predict.samples) must be at least 1"),
    (["--top-k", "0"], "--top-k (predict.top_k) must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--set", "train.epochs=abc"], "--set train.epochs takes a whole number, got 'abc'"),
    (["--set", "train.batch_size=2.5"], "--set train.batch_size takes a whole number"),
    (["--set", "train.lvo=maybe"], "--set train.lvo is true or false"),
    (["--set", "train.schedule=weekly"], "train.schedule must be one of manual"),
])
def test_bad_settings_change_nothing(options: list[str], message: str, run_dir: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(run_dir)
    fails_with([*DIGITS, *options, "--resume", "--out", str(run_dir)], message, capsys)
    assert snapshot(run_dir) == before


def test_settings_are_converted_to_their_types() -> None:
    cfg = build_config("digits", "cpu")
    changed = apply_overrides(cfg, ["train.lvo=False", "train.augment=yes", "train.epochs=7",
                                    "train.lr=2e-3", "model.head_hidden=[32, 16]",
                                    "train.grad_clip=null", "train.cls_weight=1",
                                    'predict.rule="label"', "predict.top_k=none"])
    t = changed.train
    assert (t.lvo, t.augment, t.epochs, t.lr, t.grad_clip, t.cls_weight) == (
        False, True, 7, 0.002, None, 1.0)
    assert changed.model.head_hidden == (32, 16) and changed.predict.rule == "label"
    assert changed.predict.top_k is None
    assert convert("32,16", tuple[int, ...], "k") == (32, 16)
    with pytest.raises(DGCError, match="must be a finite number"):
        convert("-inf", float, "k")
    with pytest.raises(DGCError, match=r"--lr \(train.lr\) is 'fast'; expected a finite number"):
        validate(type(cfg)(train=TrainConfig(lr="fast")))  # the library API is checked too


def test_a_run_without_out_is_written_to_its_default_folder() -> None:
    cfg = build_config("digits", "cpu", seed=3)
    assert cfg.out is None and cfg.out_dir == str(Path("runs") / "digits-dgc-s3")
    assert build_config("digits", "cpu", out="elsewhere").out_dir == "elsewhere"


def test_sample_and_evaluate_options_are_checked(run_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    fails_with(["sample", str(run_dir), "--class", "0", "--n", "0", "--out",
                str(tmp_path / "s.npz")], "--n must be at least 1", capsys)
    # more than the machine's memory: before, a MemoryError traceback (issue 34)
    fails_with(["sample", str(run_dir), "--class", "0", "--n", str(10**13), "--out",
                str(tmp_path / "s.npz")], "10,000,000,000,000 images of 8×8×1 take about", capsys)
    assert not list(tmp_path.glob("s.*"))
    fails_with(["evaluate", str(run_dir), "--samples", "0"], "--samples (predict.samples)",
               capsys)
    assert not list(run_dir.glob("eval-*"))


def test_predict_and_sample_keep_existing_files(run_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8, 1), np.uint8))
    (tmp_path / "p.csv").write_text("mine")
    predict = ["predict", str(run_dir), "--input", str(tmp_path / "x.npy"), "--out",
               str(tmp_path / "p.csv")]
    fails_with(predict, "p.csv already exists; pass --overwrite to replace", capsys)
    assert (tmp_path / "p.csv").read_text() == "mine"
    assert main([*predict, "--overwrite"]) == 0
    assert (tmp_path / "p.csv").read_text().startswith("input,predicted")
    (tmp_path / "s.png").write_text("mine")
    sample = ["sample", str(run_dir), "--class", "0", "--n", "2", "--out", str(tmp_path / "s.npz")]
    fails_with(sample, "s.png already exists", capsys)
    assert (tmp_path / "s.png").read_text() == "mine" and not (tmp_path / "s.npz").exists()
    (tmp_path / "s.png").unlink()
    (tmp_path / "s.npz").write_text("mine")
    fails_with(sample, "s.npz already exists", capsys)
    assert (tmp_path / "s.npz").read_text() == "mine" and not (tmp_path / "s.png").exists()
    assert main([*sample, "--overwrite"]) == 0
    assert np.load(tmp_path / "s.npz")["x"].shape == (2, 8, 8, 1)
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")


# -- the data never silently changes ---------------------------------------------------------

def test_resume_on_other_data_is_refused(run_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(run_dir)
    other = digits_npz(tmp_path / "other.npz")  # with class 9's test images this time
    fails_with([*TRAIN, "--epochs", "2", "--data", str(other), "--resume", "--out",
                str(run_dir)], "the test set of", capsys)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(("method", "refused"), [("ldam-drw", True), ("cb", False),
                                                  ("dgc-faithful", False)])
def test_more_epochs_on_resume_only_where_nothing_depends_on_them(method: str,
                                                                  refused: bool) -> None:
    """LDAM-DRW re-weights from 80 % of the epochs: more epochs would move that point mid-run."""
    cfg = get_method(method).configure(build_config("fashion", "cpu"))
    assert cfg.train.schedule not in EPOCH_DEPENDENT_SCHEDULES
    longer = apply_overrides(cfg, [f"train.epochs={cfg.train.epochs + 10}"])
    if refused:
        with pytest.raises(DGCError, match="train.epochs"):
            check_resume(cfg.to_dict(), longer.to_dict(), "the run's")
    else:
        check_resume(cfg.to_dict(), longer.to_dict(), "the run's")


def test_evaluate_and_report_refuse_changed_data(finished: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = finished.parent / "digits.npz"
    saved = data.read_bytes()
    try:
        arrays = dict(np.load(data))
        arrays["x_train"][0] = 255 - arrays["x_train"][0]
        np.savez(data, **arrays)
        before = snapshot(finished)
        line = fails_with(["evaluate", str(finished)], "the data has changed since", capsys)
        assert "the training split of" in line and "test set" not in line
        fails_with(["report", str(finished)], "the data has changed since", capsys)
        fails_with(["sample", str(finished), "--class", "0", "--n", "2", "--out",
                    str(tmp_path / "s.npz")], "the data has changed since", capsys)
        assert snapshot(finished) == before and not list(tmp_path.iterdir())
    finally:
        data.write_bytes(saved)


def test_evaluate_and_report_wait_for_a_run_in_use(run_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """They write into the run's folder, so they take its lock as `train` does."""
    (run_dir / LOCK).write_text(f"{os.uname().nodename} {os.getpid()}\n")  # a live process
    before = snapshot(run_dir)
    for command in (["evaluate", str(run_dir), "--samples", "1"], ["report", str(run_dir)]):
        fails_with(command, f"is in use by process {os.getpid()}", capsys)
    assert snapshot(run_dir) == before


# -- results that would be quietly wrong -------------------------------------------------------

def test_one_class_training_set_is_refused(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    x = np.zeros((6, 8, 8), np.uint8)
    np.savez(tmp_path / "one.npz", x_train=x, y_train=np.zeros(6, np.int64), x_test=x[:2],
             y_test=np.zeros(2, np.int64))
    fails_with([*TRAIN, "--data", str(tmp_path / "one.npz"), "--out", str(tmp_path / "r")],
               "needs at least two classes", capsys)
    assert not (tmp_path / "r").exists()


def test_a_class_without_test_images_is_left_out_and_reported(finished: Path) -> None:
    metrics = json.loads((finished / "metrics.json").read_text())
    assert metrics["absent_classes"] == ["9"]
    recalls = [row["recall"] for row in metrics["per_class"][:9]]
    assert metrics["acsa"] == pytest.approx(np.mean(recalls))
    assert main(["report", str(finished), "--quiet"]) == 0
    assert "left out of the macro means and R_MI: 9." in (finished / "report.md").read_text()
    figure = json.loads((finished / "figures" / "recall_vs_count.json").read_text())
    assert figure["recall"][9] is None and figure["acsa"] == pytest.approx(metrics["acsa"])


# -- errors that were tracebacks -------------------------------------------------------------

def test_a_zip_of_text_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as archive:
        for name in ("x_train", "y_train", "x_test", "y_test"):
            archive.writestr(name, "some text")
    fails_with([*TRAIN, "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "r")],
               "'x_train' is not a numpy array", capsys)


def test_a_config_that_is_not_an_object(run_dir: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (run_dir / "config.json").write_text("[1, 2]\n")
    fails_with(["evaluate", str(run_dir)], "config.json is not a dgc run configuration (it "
               "holds a JSON list, not an object)", capsys)
    (run_dir / "config.json").write_text('{"train": 3}\n')
    fails_with(["report", str(run_dir)], "holds settings this version cannot use", capsys)


def test_a_checkpoint_of_another_architecture(run_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "wide"
    assert main([*DIGITS, "--set", "model.width=8", "--out", str(other)]) == 0
    shutil.copy(other / "best.pt", run_dir / "best.pt")
    line = fails_with(["evaluate", str(run_dir)], "best.pt holds the weights of another "
                      "architecture than its configuration describes", capsys)
    assert "weights of other shapes (encoder.trunk.1.weight (8, 1, 4, 4) instead of " \
        "(32, 1, 4, 4)" in line


def test_a_pickled_object_in_a_checkpoint_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Path("x")}, path)
    with pytest.raises(DGCError) as caught:
        load_checkpoint(path)
    assert "\n" not in str(caught.value)
    assert "holds Python objects besides tensors" in str(caught.value)
    assert "Unsupported global" in str(caught.value)


def test_images_too_large_for_the_architecture(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    x = np.zeros((4, 2000, 2000), np.uint8)
    np.savez(tmp_path / "big.npz", x_train=x, y_train=np.array([0, 1, 0, 1]), x_test=x[:2],
             y_test=np.array([0, 1]))
    line = fails_with([*TRAIN, "--data", str(tmp_path / "big.npz"), "--preset", "paper",
                       "--out", str(tmp_path / "r")], "inputs of shape 2000×2000×1 need about",
                      capsys)
    assert "resize the images" in line
    assert not (tmp_path / "r").exists()


def test_a_decompression_bomb_is_one_line(run_dir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "pngs"
    folder.mkdir()
    Image.new("L", (200, 200)).save(folder / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40,000 pixels is then a bomb
    fails_with(["predict", str(run_dir), "--input", str(folder), "--out",
                str(tmp_path / "p.csv")], "cannot read image", capsys)


# -- files others can read, logs without control characters ------------------------------------

def test_files_respect_the_umask_and_logs_are_lines(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    before = os.umask(0o022)
    try:
        argv = [a for a in DIGITS if a != "--quiet"]
        assert main([*argv, "--epochs", "2", "--out", str(tmp_path / "r")]) == 0
    finally:
        os.umask(before)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "r").iterdir() if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes
    out, err = capsys.readouterr()
    assert "dgc: epoch 1/2 " in out and "dgc: epoch 2/2 " in out
    assert "\r" not in out + err and "\x1b" not in out + err


def test_the_run_folder_and_config_modules_do_not_load_torch() -> None:
    """`dgc.run.folder`, `dgc.config` and `dgc.methods.registry` answer questions about runs and
    settings (which tools and tests ask often) without the seconds torch takes to import."""
    code = ("import sys, dgc.run.folder, dgc.config, dgc.methods.registry, dgc.core.io; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
