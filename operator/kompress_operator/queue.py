"""The run queue: which runs hold a Job slot, and which queued runs may start now.

A plain object over snapshots of the operator's indexes (no API calls, no Kopf), so that every
queue decision is unit-tested. Its methods never wait, so on the operator's event loop each is
atomic: no lock is needed between deciding that a run fits and reserving its slot.

A run holds a slot while its status says Running (the `running` index) or, for a short while,
while its Job has been created and its Running status has not come back through the watch yet
(a reservation).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping

from .fair_share import Fairness, Waiting, admit, position
from .run_ref import RUN_JOB, TUNING_JOB, RunRef

RESERVATION_SECONDS = 60.0  # a run we started counts as running until the index shows its status
Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class InFlight:
    """What the indexes say now: the names of Running runs per namespace, the Queued runs, and
    the generation of every run's Job that exists."""

    running: Mapping[str, Collection[str]] = field(default_factory=dict)
    waiting: Collection[Waiting] = ()
    jobs: Mapping[Key, Collection[tuple[int, str, int]]] = field(default_factory=dict)  # (generation, RunRef.job_key, rerun)
    wide: Mapping[str, Collection[tuple[str, int]]] = field(default_factory=dict)  # runs holding several slots: (name, slots)

    def has_job(self, run: RunRef, role: str = RUN_JOB) -> bool:
        return (run.generation, run.job_key(role), run.rerun) in self.jobs.get(run.key, ())

    def extra_slots(self) -> Counter:
        """Slots beyond one per run, per namespace: Tuning runs hold one per worker Pod, runs with
        several hardware targets one per target's Job (slots_of)."""
        extra: Counter = Counter()
        for namespace, runs in self.wide.items():
            for _, slots in runs:
                extra[namespace] += slots - 1
        return extra

    def is_running(self, key: Key) -> bool:
        return key[1] in self.running.get(key[0], ())

    def running_count(self) -> int:
        return sum(len(names) for names in self.running.values())


@dataclass(frozen=True)
class Verdict:
    """try_start's answer: start now (the slot is reserved), or wait with the reason why."""

    start: bool
    message: str = ""


class RunQueue:
    def __init__(self, max_running: int, max_per_namespace: int, clock: Callable[[], float] = time.monotonic,
                 fairness: Fairness = Fairness()):
        self.max_running, self.max_per_namespace, self.clock, self.fairness = max_running, max_per_namespace, clock, fairness
        self.reserved: dict[Key, tuple[int, float, int]] = {}  # key → (generation, when, slots)
        self.served: dict[str, int] = {}  # namespace → the turn it last got a slot (ties of fair share go to the others)
        self._turns = itertools.count()

    def just_started(self, key: Key, generation: int) -> bool:
        """Started a moment ago: its Running status has not come back yet."""
        return self.reserved.get(key, (None,))[0] == generation

    def try_start(self, run: Waiting, generation: int, now: InFlight) -> Verdict:
        """Reserve a slot for `run` if admission would start it now, among the queued runs."""
        waiting = [w for w in self._not_starting(now.waiting) if w.key != run.key] + [run]
        if not self._far_below(now, sum(w.slots for w in waiting)):  # when every waiting run fits, counting exactly is not needed
            running = self.running(now)
            if run.key not in admit(waiting, running, self.max_running, self.max_per_namespace, self.fairness, self.served):
                wanted = "a Job slot" if run.slots == 1 else f"{run.slots} Job slots (one per worker Pod)"
                return Verdict(False, f"waiting for {wanted}: {sum(running.values())}/{self.max_running} running cluster-wide, "
                                      f"{running[run.namespace]}/{self.max_per_namespace} in {run.namespace}; "
                                      f"position {position(run.key, waiting, running, self.fairness, self.served)} of {len(waiting)}")
        self.reserve(run.key, generation, run.slots)
        return Verdict(True)

    def take_startable(self, now: InFlight, generation_of: Callable[[dict], int]) -> list[Waiting]:
        """The queued runs that fit now, in queue order, with their slots reserved. Only runs
        queued for their current spec: a newer generation is the reconciler's to decide."""
        if not now.waiting:
            return []
        running = self.running(now)
        if sum(running.values()) >= self.max_running:
            return []
        waiting = [w for w in self._not_starting(now.waiting)
                   if (w.body.get("status") or {}).get("observedGeneration") == generation_of(w.body)]
        by_key = {w.key: w for w in waiting}
        starting = [by_key[key] for key in admit(waiting, running, self.max_running, self.max_per_namespace, self.fairness,
                                                  self.served)]
        for run in starting:
            self.reserve(run.key, generation_of(run.body), run.slots)
        return starting

    def take_unlaunched(self, now: InFlight, generation_of: Callable[[dict], int]) -> list[Waiting]:
        """Queuing through Kueue: every queued run of its current spec whose Job does not exist yet
        (a re-run, or a run queued before Kueue was turned on), reserved so it is created once.
        Kueue, not this queue, decides when each runs."""
        unlaunched = []
        for w in self._not_starting(now.waiting):
            generation = generation_of(w.body)
            if (w.body.get("status") or {}).get("observedGeneration") != generation:
                continue
            if not now.has_job(RunRef.of_resource(w.body), TUNING_JOB if w.slots > 1 else RUN_JOB):
                self.reserve(w.key, generation, w.slots)
                unlaunched.append(w)
        return unlaunched

    def reserve(self, key: Key, generation: int, slots: int = 1) -> None:
        self.reserved[key] = (generation, self.clock(), slots)
        self.served[key[0]] = next(self._turns)

    def release(self, key: Key, generation: int | None = None) -> None:
        """Free a reservation; with a generation, only that generation's (a Job of an older spec
        going must not free the slot just reserved for the new one)."""
        if generation is None or self.just_started(key, generation):
            self.reserved.pop(key, None)

    def running(self, now: InFlight) -> Counter:
        """Slots taken per namespace: Running runs plus live reservations (expired ones and those
        the index now shows are dropped)."""
        counts: Counter = now.extra_slots()
        seen = set()
        for namespace, names in now.running.items():
            for name in names:
                counts[namespace] += 1
                seen.add((namespace, name))
        deadline = self.clock() - RESERVATION_SECONDS
        for key, (_, at, slots) in list(self.reserved.items()):
            if key in seen or at < deadline:
                del self.reserved[key]
            else:
                counts[key[0]] += slots
        return counts

    def _not_starting(self, waiting: Collection[Waiting]) -> list[Waiting]:
        return [w for w in waiting if w.key not in self.reserved]

    def _far_below(self, now: InFlight, starting: int) -> bool:
        """True when even counting every reservation twice, `starting` more runs stay under both caps."""
        cap = min(self.max_running, self.max_per_namespace)
        reserved = sum(slots for _, _, slots in self.reserved.values())
        return now.running_count() + sum(now.extra_slots().values()) + reserved + starting <= cap
