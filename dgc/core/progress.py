"""Progress for long work: tqdm bars on a terminal, plain lines everywhere else.

A bar's carriage returns and cursor moves garble a log file or a pipe, so when stderr is not a
terminal the bars are off and the work prints a line now and then instead. `quiet` (the command
line's --quiet) silences both, down to the layers that are not told of it (reading data)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_QUIET: ContextVar[bool] = ContextVar("quiet", default=False)


@contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """No bars and no progress lines while the body runs, whatever a caller enables."""
    token = _QUIET.set(on)
    try:
        yield
    finally:
        _QUIET.reset(token)


def interactive() -> bool:
    """Whether stderr is a terminal, where a bar redraws itself in place."""
    return sys.stderr.isatty()


def visible(enabled: bool = True) -> bool:
    """Whether progress asked for with `enabled` is shown (not under `quiet`)."""
    return enabled and not _QUIET.get()


def bar(iterable: Any = None, enabled: bool = True, **options: Any) -> tqdm:
    """A tqdm bar, shown only when `enabled` and stderr is a terminal."""
    return tqdm(iterable, disable=not (visible(enabled) and interactive()), **options)


def steps(items: Sequence[T], desc: str, unit: str, enabled: bool) -> Iterator[T]:
    """`items` with progress: a bar on a terminal, else a line at every tenth of the way."""
    if not visible(enabled) or interactive():
        yield from bar(items, enabled, desc=desc, unit=unit)
        return
    shown = 0
    for done, item in enumerate(items, 1):
        yield item
        if done * 10 // len(items) > shown:
            shown = done * 10 // len(items)
            print(f"dgc: {desc} {done}/{len(items)} {unit}", file=sys.stderr, flush=True)


def stage(items: Sequence[T], desc: str, unit: str) -> Iterator[T]:
    """`items` of one stage of a longer task (reading a dataset): a bar on a terminal that goes
    when done, else one line as the stage starts."""
    if visible() and not interactive():
        print(f"dgc: {desc}: {len(items)} {unit}", file=sys.stderr, flush=True)
    yield from bar(items, desc=desc, unit=unit, leave=False)
