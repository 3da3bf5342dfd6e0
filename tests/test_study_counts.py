"""A parallel study starts no trial beyond its budget: the worker's "is there room?" counts the
judged and the running trials from one read of the study. Read twice, a trial that finishes between
the reads is in neither count, and the worker starts one trial too many (seen in the cluster test:
13 trials for a budget of 12)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kompress_jobs.tuning.study_report import count_trials, judged_and_running, judged_trials

pytestmark = pytest.mark.unit


def trial(state: str, **user_attrs):
    return SimpleNamespace(state=SimpleNamespace(name=state), user_attrs=user_attrs)


class FinishingStudy:
    """A study in which one running trial finishes right after the first read."""

    def __init__(self):
        running = [trial("RUNNING"), trial("RUNNING")]
        finished = [trial("COMPLETE"), trial("RUNNING")]
        done = [trial("COMPLETE") for _ in range(10)]
        self.reads = [done + running, done + finished]

    def get_trials(self, deepcopy: bool = False):
        return self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]


def test_one_read_counts_a_trial_that_finishes_meanwhile_once():
    judged, running = judged_and_running(FinishingStudy())
    assert (judged, running) == (10, 2) and judged + running == 12  # a budget of 12 is full: wait


def test_two_reads_would_count_it_in_neither():
    """The race the single read closes, shown on the same study."""
    study = FinishingStudy()
    assert judged_trials(study) + count_trials(study, "RUNNING") == 11


def test_what_counts_against_the_budget():
    study = SimpleNamespace(get_trials=lambda deepcopy=False: [
        trial("COMPLETE"), trial("PRUNED"), trial("FAIL", error="bad spec"),  # judged
        trial("FAIL"),  # lost with its Pod: retried, not counted
        trial("COMPLETE", repeatOf=0),  # a repeat measures nothing
        trial("WAITING"), trial("RUNNING")])
    assert judged_and_running(study) == (3, 1)
