"""Progress for long work: tqdm bars on a terminal, plain lines everywhere else.

A bar's carriage returns and cursor moves garble a log file or a pipe, so when stderr is not a
terminal the bars are off and the work prints a line now and then instead."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def interactive() -> bool:
    """Whether stderr is a terminal, where a bar redraws itself in place."""
    return sys.stderr.isatty()


def bar(iterable: Any = None, enabled: bool = True, **options: Any) -> tqdm:
    """A tqdm bar, shown only when `enabled` and stderr is a terminal."""
    return tqdm(iterable, disable=not (enabled and interactive()), **options)


def steps(items: Sequence[T], desc: str, unit: str, enabled: bool) -> Iterator[T]:
    """`items` with progress: a bar on a terminal, else a line at every tenth of the way."""
    if not enabled or interactive():
        yield from bar(items, enabled, desc=desc, unit=unit)
        return
    shown = 0
    for done, item in enumerate(items, 1):
        yield item
        if done * 10 // len(items) > shown:
            shown = done * 10 // len(items)
            print(f"dgc: {desc} {done}/{len(items)} {unit}", file=sys.stderr, flush=True)
