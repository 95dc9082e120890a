"""Run a list of shell commands side by side on one machine, stop at a deadline, pack the results.

Made for a lent GPU with a fixed lease: the narrow `cpu`-preset networks leave one process far
from filling the GPU, so several `dgc` runs share it (one CPU core each). Jobs start in file
order; none starts when less than `--min-left` seconds remain; at the deadline the running ones
get SIGTERM (a `dgc` run saves its checkpoint and exits 143, so `--resume` finishes it later).
Then `--pack` folders go into OUT/runs.tar.gz without checkpoints, and the `best.pt` of the run
folders matching `--checkpoints` into OUT/checkpoints-N.tar (at most 15 MB each), so that they
can be re-scored elsewhere. OUT/jobs.json records each job's command, exit code and seconds.

    python tools/gpu_queue.py tools/gpu-jobs-fashion.txt --parallel 12 \
        --deadline 520 --pack runs/gpu --checkpoints 'runs/gpu/bench-dgcmm*/*' --out "$OUT"

In the jobs file, one command per line ('#' starts a comment); `$PY` is this Python.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

PART_BYTES = 15 * 2**20


def read_jobs(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def stop(processes: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    """SIGTERM every job's process group at once, then SIGKILL what is left after `grace` s."""
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
    ends = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(max(0.0, ends - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_queue(jobs: list[str], parallel: int, deadline: float, min_left: float,
              log_dir: Path) -> list[dict[str, object]]:
    """Run `jobs` (shell commands) `parallel` at a time until done or `deadline` seconds."""
    start = time.monotonic()
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PY": sys.executable, "PYTHONUNBUFFERED": "1"}
    records: dict[int, dict[str, object]] = {
        index: {"job": index, "command": command, "rc": None, "seconds": 0.0}
        for index, command in enumerate(jobs)}
    running: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
    pending = list(records)

    def finish(index: int, now: float) -> None:
        process, began = running.pop(index)
        records[index].update(rc=process.returncode, seconds=round(now - began, 1))
        print(f"[{now:6.0f}s] job {index} rc {process.returncode} ({now - began:.0f}s): "
              f"{jobs[index]}", flush=True)

    while pending or running:
        now = time.monotonic() - start
        if now >= deadline:
            stop([process for process, _ in running.values()])
            for index in list(running):
                finish(index, now)
            break
        for index in [i for i, (process, _) in running.items() if process.poll() is not None]:
            finish(index, now)
        while pending and len(running) < parallel and deadline - now >= min_left:
            index = pending.pop(0)
            with open(log_dir / f"job-{index:03d}.log", "wb") as log:  # the child keeps its copy
                process = subprocess.Popen(jobs[index], shell=True, stdout=log,
                                           stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True)
            running[index] = (process, now)
            records[index]["started"] = round(now, 1)
        time.sleep(1.0)
    return list(records.values())


def pack(folders: list[Path], patterns: list[str], out: Path) -> None:
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
        for folder in folders:
            if folder.exists():
                tar.add(folder, filter=lambda info: None if info.name.endswith(".pt") else info)
    parts: list[list[Path]] = []
    size = PART_BYTES
    for pattern in patterns:
        for best in map(Path, sorted(glob.glob(pattern.rstrip("/") + "/best.pt"))):
            if size + best.stat().st_size > PART_BYTES:
                parts.append([])
                size = 0
            parts[-1].append(best)
            size += best.stat().st_size
    for index, part in enumerate(parts, 1):
        with tarfile.open(out / f"checkpoints-{index}.tar", "w") as tar:
            for best in part:
                tar.add(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", type=Path)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=520.0, help="seconds")
    parser.add_argument("--min-left", type=float, default=45.0,
                        help="start no job with fewer seconds than this left")
    parser.add_argument("--pack", type=Path, action="append", default=[])
    parser.add_argument("--checkpoints", action="append", default=[],
                        help="glob of run folders whose best.pt comes back")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = args.pack[0] / "logs" if args.pack else args.out / "logs"
    records = run_queue(read_jobs(args.jobs), args.parallel, args.deadline, args.min_left,
                        log_dir)
    (args.out / "jobs.json").write_text(json.dumps(records, indent=1) + "\n")
    pack(args.pack, args.checkpoints, args.out)
    finished = sum(r.get("rc") == 0 for r in records)
    print(f"gpu_queue: {finished} of {len(records)} jobs finished", flush=True)


if __name__ == "__main__":
    main()
