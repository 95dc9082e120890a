"""Where a training step of the `cpu` preset spends its time: torch.profiler over a few steps.

Trains `--steps` batches of one method (default `dgc`) on the imbalanced training set after
`--warmup` untimed ones, then prints the mean wall time per step and torch's table of the
operators with the most self CPU time, so the avoidable parts of a step (data handling in
Python, redundant passes, host copies) show up by name. Standard-library timing, not a test.

    python tools/profile_training.py --threads 2              # dgc, Fashion-MNIST
    python tools/profile_training.py --method ce --threads 2
    python tools/profile_training.py --exp elpv --preset images --timing --steps 10 --warmup 2

`--timing` leaves the profiler out and prints the median and fastest step instead.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from dgc.data import dataset_names
from dgc.methods.family import build_model, family_of
from dgc.methods.registry import METHODS, resolve_config
from dgc.run.finished import run_data, to_train_data


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exp", default="fashion", choices=dataset_names())
    parser.add_argument("--method", default="dgc", choices=list(METHODS))
    parser.add_argument("--preset", default="cpu", choices=("cpu", "paper", "images"))
    parser.add_argument("--steps", type=int, default=30, help="profiled training steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--rows", type=int, default=15, help="operators shown")
    parser.add_argument("--timing", action="store_true",
                        help="time each step without the profiler: median and fastest")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = resolve_config(args.exp, args.preset, args.method, seed=1)
    data = to_train_data(run_data(cfg), cfg)
    image_shape = (*data.x.shape[2:], data.x.shape[1])
    model = build_model(cfg, image_shape, len(data.train_counts))
    trainer = family_of(cfg).trainer(model, cfg, data, log=lambda _: None)
    trainer.prepare()
    order = trainer.epoch_order()
    size = cfg.train.batch_size
    batches = [order[i:i + size] for i in range(0, len(order), size)]
    if len(batches) < args.warmup + args.steps:
        raise SystemExit(f"the training set has {len(batches)} batches; ask for fewer steps")
    for index in batches[:args.warmup]:
        trainer.train_step(index)
    if args.timing:
        times = []
        for index in batches[args.warmup:args.warmup + args.steps]:
            started = time.perf_counter()
            trainer.train_step(index)
            times.append(time.perf_counter() - started)
        print(f"{args.method} on {args.exp} ({args.preset} preset), batch {size}, "
              f"{torch.get_num_threads()} threads: median {1000 * statistics.median(times):.0f} "
              f"ms per step, fastest {1000 * min(times):.0f} ms, over {len(times)} steps")
        return
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for index in batches[args.warmup:args.warmup + args.steps]:
            trainer.train_step(index)
        seconds = time.perf_counter() - started
    per_step = seconds / args.steps
    print(f"{args.method} on {args.exp} ({args.preset} preset), batch {size}, "
          f"{torch.get_num_threads()} threads: {per_step * 1000:.1f} ms per step "
          f"({size / per_step:.0f} images/s; under the profiler, which adds a little)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
