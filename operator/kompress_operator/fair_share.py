"""Which queued runs may start now, under a cluster-wide and a per-namespace cap, shared fairly.

Order: the namespace holding the smallest share of Job slots (slots in flight / its weight) goes
next, and among equal shares the one served longest ago (`served`: when each namespace last got a
slot), so one team with fifty queued runs cannot hold back another team's first, even when slots
free one at a time (each would otherwise go to the oldest queued run: the team's own); within a
namespace, higher spec.job.priority first, then older resources. A tenant's priority orders only its
own runs, unless the policy lets it order across namespaces (priorityAcrossNamespaces). Caps count
Job slots: a run takes one, a parallel study one per worker Pod while it tunes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Mapping


@dataclass(frozen=True)
class Waiting:
    namespace: str
    name: str
    priority: int
    created: str  # RFC 3339: sorts chronologically as text
    slots: int = 1  # Job slots it takes: a parallel study's worker Pods each take one
    # queued_stub() of the resource as last seen. Compared (Kopf keeps an index's old value when
    # the new one is equal, which would keep a stale generation), not hashed (a dict).
    body: dict = field(default_factory=dict, hash=False, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


def queued_stub(body: dict) -> dict:
    """What the queue keeps of a queued resource: its identity, generation, observed generation and
    re-run count (which name its next Job: run_ref.RunRef)."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    return {"metadata": {k: meta.get(k) for k in ("namespace", "name", "uid", "generation", "creationTimestamp")},
            "status": {"observedGeneration": status.get("observedGeneration"),
                       "reoptimization": {"runs": (status.get("reoptimization") or {}).get("runs") or 0}}}


@dataclass(frozen=True)
class Fairness:
    """How slots are shared between namespaces (operator settings namespaceWeights, priorityAcrossNamespaces)."""

    weights: dict[str, float] = field(default_factory=dict)
    priority_across_namespaces: bool = False

    def weight(self, namespace: str) -> float:
        return self.weights.get(namespace, 1.0) or 1.0


def _own_order(run: Waiting) -> tuple:
    return -run.priority, run.created, run.name


def fair_order(waiting: list[Waiting], running: Counter, fairness: Fairness = Fairness(),
               max_per_namespace: int | None = None, served: Mapping[str, int] = {}) -> Iterator[Waiting]:
    """The queued runs in start order, as slots are taken one run at a time: each next run is the
    head of the namespace with the smallest weighted share, then served longest ago. A namespace
    whose head would pass max_per_namespace has no more turns."""
    queues: dict[str, list[Waiting]] = {}
    for run in sorted(waiting, key=_own_order, reverse=True):  # each queue's head is its last item
        queues.setdefault(run.namespace, []).append(run)
    held, last = Counter(running), dict(served)
    while queues:
        def turn(namespace: str) -> tuple:
            head = queues[namespace][-1]
            share = held[namespace] / fairness.weight(namespace)
            if fairness.priority_across_namespaces:
                return -head.priority, share, last.get(namespace, -1), head.created, namespace
            return share, last.get(namespace, -1), head.created, namespace
        namespace = min(queues, key=turn)
        run = queues[namespace][-1]
        if max_per_namespace is not None and held[namespace] + run.slots > max_per_namespace:
            del queues[namespace]
            continue
        yield run
        held[namespace] += run.slots
        last[namespace] = max(last.values(), default=0) + 1
        queues[namespace].pop()
        if not queues[namespace]:
            del queues[namespace]


def admit(waiting: list[Waiting], running: Counter, max_total: int, max_per_namespace: int,
          fairness: Fairness = Fairness(), served: Mapping[str, int] = {}) -> list[tuple[str, str]]:
    """Keys of the runs to start now, in start order."""
    total, started = sum(running.values()), []
    for run in fair_order(waiting, running, fairness, max_per_namespace, served):
        if total + run.slots > max_total:
            break  # the head waits for its slots; smaller runs behind it do not overtake it forever
        total += run.slots
        started.append(run.key)
    return started


def position(key: tuple[str, str], waiting: list[Waiting], running: Counter = Counter(), fairness: Fairness = Fairness(),
             served: Mapping[str, int] = {}) -> int:
    order = [run.key for run in fair_order(waiting, running, fairness, served=served)]
    return order.index(key) + 1 if key in order else len(order)
