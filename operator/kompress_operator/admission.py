"""Which queued runs may start now, under a cluster-wide and a per-namespace cap.

Order: higher spec.job.priority first, then older resources first. A run blocked only by its
own namespace's cap does not hold back runs of other namespaces. Caps count Job slots: a run
takes one, a parallel study one per worker Pod while it tunes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Waiting:
    namespace: str
    name: str
    priority: int
    created: str  # RFC 3339: sorts chronologically as text
    slots: int = 1  # Job slots it takes: a parallel study's worker Pods each take one
    # The resource as last seen, to start it from. Compared (Kopf keeps an index's old value when
    # the new one is equal, which would keep a stale spec), not hashed (a dict).
    body: dict = field(default_factory=dict, hash=False, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


def admit(waiting: list[Waiting], running: Counter, max_total: int, max_per_namespace: int) -> list[tuple[str, str]]:
    """Keys of the runs to start now, in start order."""
    in_flight = Counter(running)
    total = sum(in_flight.values())
    started = []
    for run in sorted(waiting, key=lambda w: (-w.priority, w.created, w.namespace, w.name)):
        if total + run.slots > max_total:
            break  # the head waits for its slots; smaller runs behind it do not overtake it forever
        if in_flight[run.namespace] + run.slots > max_per_namespace:
            continue
        in_flight[run.namespace] += run.slots
        total += run.slots
        started.append(run.key)
    return started


def position(key: tuple[str, str], waiting: list[Waiting]) -> int:
    order = sorted(waiting, key=lambda w: (-w.priority, w.created, w.namespace, w.name))
    return next((i for i, w in enumerate(order, start=1) if w.key == key), len(order))
