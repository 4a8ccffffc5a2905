"""Where a micro-batch step spends its time: seconds per named phase, summed over chunks.

The steps report them in their results and Dagster shows them as run metadata, so a slow run
says which phase was slow (read, validate, insert, publish, ...)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Phases:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def merge(self, other: Phases) -> None:
        for name, seconds in other.seconds.items():
            self.add(name, seconds)

    def rounded(self, digits: int = 3) -> dict[str, float]:
        return {name: round(s, digits) for name, s in self.seconds.items()}
