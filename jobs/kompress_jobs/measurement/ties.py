"""Noise-aware choice: differences inside a tolerance are ties, broken by the next criterion. One rule
for the selection's ranking and the steered searches' choice of trial; free of numpy, since the
operator imports the passes that use it."""

from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")
Criterion = tuple[Callable[[T], float], Callable[[float], float]]  # a key, and how far from the best counts as a tie
SIZE_TIE = 0.01  # sizes within 1 % are equal: a little metadata is no reason to prefer one


def pick_within_ties(pool: list[T], criteria: list[Criterion]) -> T:
    """The best by the first criterion; those within its tolerance of the best are judged by the next."""
    for key, tolerance in criteria:
        best = min(key(c) for c in pool)
        pool = [c for c in pool if key(c) <= best + tolerance(best)]
        if len(pool) == 1:
            break
    return min(pool, key=lambda c: tuple(key(c) for key, _ in criteria))
