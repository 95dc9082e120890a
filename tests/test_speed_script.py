"""Smoke test of tools/speed.py on digits: what it writes, never how fast it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASE_KEYS = {"images", "seconds", "images_per_s", "peak_rss_mib", "rss_increase_mib"}


def test_speed_benchmark_runs_on_digits(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(ROOT / "tools" / "speed.py"), "--exp", "digits",
               "--epochs", "1", "--threads", "1", "--out", str(out)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    numbers = json.loads(out.read_text())
    assert set(numbers["dgc"]) == {"train", "predict_exact", "predict_default"}
    assert set(numbers["ce"]) == {"train", "predict"}
    for phases in (numbers["dgc"], numbers["ce"]):
        for phase in phases.values():
            assert set(phase) >= PHASE_KEYS and phase["images_per_s"] > 0
    assert numbers["dgc"]["train"]["images"] == 390  # the digits training split, one epoch
    assert numbers["dgc"]["predict_exact"]["images"] == 500  # the whole test set
    exact = numbers["dgc"]["predict_exact"]["setting"]
    default = numbers["dgc"]["predict_default"]["setting"]
    assert (exact["top_k"], exact["samples"]) == (None, 10)
    assert (default["top_k"], default["samples"]) == (2, 1)
    assert len(numbers["table"]) == 6
    assert all(set(row) == {"quantity", "dgc", "ce", "dgc_over_ce"} for row in numbers["table"])
    assert set(numbers["targets"]) == {"dgc_default_images_per_s",
                                       "dgc_default_prediction_time_over_ce"}
    assert "| training, images/s |" in result.stdout


def test_speed_benchmark_compares_training_variants(tmp_path: Path) -> None:
    out = tmp_path / "training.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(ROOT / "tools" / "speed.py"), "--training", "--exp",
               "digits", "--epochs", "1", "--threads", "1", "--batch-sizes", "50,100",
               "--set", "model.backbone=resnet", "--set", "model.width=8", "--out", str(out)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    record = json.loads(out.read_text())
    assert record["bf16"] is False  # the option, not a variant's numbers
    numbers = record["variants"]
    assert list(numbers) == ["before", "float32", "bf16", "float32-b100", "bf16-b100", "nchw",
                             "crop"]
    assert record["work"]["steps_per_epoch"] == 8  # 390 training images, batch 50
    assert record["work"]["gflop_per_step"] > 0
    assert set(record["peak_gflop_s"]) == {"float32", "bfloat16"}
    for name in numbers:
        assert set(numbers[name]) >= PHASE_KEYS | {"gflop_s", "speedup", "seconds_per_epoch"}
        assert numbers[name]["images"] == 390
    assert numbers["before"]["speedup"] == 1.0
    larger = numbers["bf16-b100"]
    assert larger["batch_size"] == 100 and larger["steps_per_epoch"] == 4
    # twice the images a step: about twice the work (the MMD's pairs grow faster, and are small)
    ratio = numbers["bf16-b100"]["gflop_per_step"] / numbers["bf16"]["gflop_per_step"]
    assert 1.9 < ratio < 2.2
    assert result.stdout.count("\n| ") == 8  # the header and one row per variant


def test_speed_benchmark_refuses_batch_sizes_it_cannot_use(tmp_path: Path) -> None:
    script = str(ROOT / "tools" / "speed.py")
    for extra, message in ((["--training", "--batch-sizes", "0,100"], "positive batch sizes"),
                           (["--training", "--batch-sizes", "big"], "positive batch sizes"),
                           (["--batch-sizes", "200"], "add --training"),
                           (["--training", "--bf16"], "leave out --bf16")):
        result = subprocess.run([sys.executable, script, "--exp", "digits", *extra],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode != 0
        assert message in result.stderr
    assert not any(tmp_path.iterdir())


def test_speed_benchmark_compares_prediction_before_and_after(tmp_path: Path) -> None:
    """`--prediction`: the exact rule and the novelty scores before and after issue 35, side by
    side, with the largest difference between their numbers (float rounding only)."""
    out = tmp_path / "prediction.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(ROOT / "tools" / "speed.py"), "--prediction", "--exp",
               "digits", "--epochs", "1", "--threads", "1", "--limit", "300", "--out", str(out)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    record = json.loads(out.read_text())
    assert list(record["phases"]) == ["exact_before", "exact", "novelty_before", "novelty"]
    for phase in record["phases"].values():
        assert set(phase) >= PHASE_KEYS and phase["images"] == 300
    assert record["phases"]["exact"]["setting"]["samples"] == 10
    comparison = record["comparison"]
    assert comparison["exact"]["same_prediction"] == 1.0
    assert max(comparison["exact"]["max_abs_difference"].values()) < 1e-4
    assert set(comparison["novelty"]["max_abs_difference"]) == {"msp", "evidence", "recon",
                                                                "latent"}
    assert max(comparison["novelty"]["max_abs_difference"].values()) < 1e-3
    assert result.stdout.count("\n| ") == 3  # the header and two rows


def test_a_depthwise_convolution_is_counted_at_its_own_work() -> None:
    """torch's FLOP formula counts a grouped convolution's weight gradient as a dense one's; the
    speed table counts each gradient at the forward pass's work, as torch does for dense ones."""
    import importlib.util

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    spec = importlib.util.spec_from_file_location("speed", ROOT / "tools" / "speed.py")
    assert spec is not None and spec.loader is not None
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    mapping = {torch.ops.aten.convolution_backward: speed.convolution_backward_flop}

    def counted(groups: int, custom: bool) -> tuple[int, int]:
        conv = torch.nn.Conv2d(16, 16, 3, groups=groups)
        x = torch.rand(4, 16, 10, 10, requires_grad=True)
        with FlopCounterMode(display=False, custom_mapping=mapping if custom else {}) as counter:
            conv(x).sum().backward()
        flops = counter.get_flop_counts()["Global"]
        return (flops[torch.ops.aten.convolution], flops[torch.ops.aten.convolution_backward])

    assert counted(1, True) == counted(1, False)  # dense: torch's own count
    forward, backward = counted(16, True)
    assert backward == 2 * forward and counted(16, False)[1] > 8 * forward
