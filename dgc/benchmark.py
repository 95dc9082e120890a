"""Benchmarks over methods and seeds (`dgc bench`): resumable runs, tables and significance."""

from __future__ import annotations

from dgc.errors import DGCError


def parse_seeds(text: str) -> list[int]:
    """'1-5' → [1, 2, 3, 4, 5]; '7,8' → [7, 8]; '1-3,7' → [1, 2, 3, 7] (order kept, no repeats)."""
    seeds: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last) if dash else int(first)
        except ValueError as error:
            raise DGCError(f"seeds are written like 1-5, 7,8 or 1-3,7; got {text!r}") from error
        if high < low:
            raise DGCError(f"seed range {part.strip()!r} runs backwards; write it as {high}-{low}")
        seeds += [s for s in range(low, high + 1) if s not in seeds]
    return seeds
