"""tools/gpu_queue.py: jobs run side by side, stop at the deadline, and come back packed."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from dgc.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_queue_runs_stops_at_the_deadline_and_packs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for name in ("a", "b"):
        (runs / name).mkdir(parents=True)
        (runs / name / "metrics.json").write_text("{}")
        (runs / name / "best.pt").write_bytes(b"w" * 100)
        (runs / name / "checkpoint.pt").write_bytes(b"c" * 100)
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("# a comment line\n"
                    "echo first > runs/out-1.txt   # a trailing comment\n"
                    "\n"
                    "$PY -c 'print(2)' > runs/out-2.txt\n"
                    "sleep 60\n"
                    "sleep 60\n"
                    "echo never > runs/never.txt\n")
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "tools" / "gpu_queue.py"), str(jobs),
               "--parallel", "2", "--deadline", "6", "--min-left", "4", "--pack", "runs",
               "--checkpoints", "runs/a", "--out", str(out)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "2 of 5 jobs finished" in result.stdout

    records = json.loads((out / "jobs.json").read_text())
    assert [r["job"] for r in records] == [0, 1, 2, 3, 4]
    assert [r["rc"] for r in records] == [0, 0, -15, -15, None]  # SIGTERM at the deadline
    assert records[4]["seconds"] == 0.0 and "started" not in records[4]
    assert (runs / "out-1.txt").read_text() == "first\n"
    assert (runs / "out-2.txt").read_text() == "2\n"  # $PY is the queue's Python
    assert not (runs / "never.txt").exists()  # no free slot before the deadline

    with tarfile.open(out / "runs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"runs/a/metrics.json", "runs/b/metrics.json", "runs/out-1.txt"} <= names
    assert not any(name.endswith(".pt") for name in names)
    assert any(name.startswith("runs/logs/job-") for name in names)
    with tarfile.open(out / "checkpoints-1.tar") as tar:
        assert tar.getnames() == ["runs/a/best.pt"]


@pytest.mark.parametrize("jobs", sorted((ROOT / "tools").glob("gpu-jobs-*.txt")),
                         ids=lambda path: path.name)
def test_every_committed_job_is_a_command_dgc_accepts(jobs: Path) -> None:
    """A job file waits for a lent GPU, maybe for sessions: its options must still parse."""
    caller = ["--exp", "fashion", "--data-dir", ".data/fashion", "--preset", "paper",
              "--device", "cuda", "--threads", "1", "--quiet"]  # what the files' $C holds
    lines = (line.split("#", 1)[0] for line in jobs.read_text().splitlines())  # as gpu_queue.py
    commands = [line.split() for line in lines if line.strip()]
    assert commands
    parser = build_parser()
    for words in commands:
        assert words[0] == "$PY"
        if words[1:3] != ["-m", "dgc"]:
            continue  # torchrun lines start dgc through torch.distributed.run
        argv = [arg for word in words[3:] for arg in (caller if word == "$C" else [word])]
        args = parser.parse_args(argv)
        assert args.command in ("train", "bench", "sweep")
