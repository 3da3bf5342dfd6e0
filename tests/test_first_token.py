"""Time to first token counts (issue 44): the language-model searches keep goals.maxTimeToFirstTokenMs
as the final selection does, timing each kept build's prefill of the benchmark's own prompt, and a
pick whose first token comes later than the baseline's says so in report.md and on the console."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from kompress_jobs.errors import PassError
from kompress_jobs.llm import search
from kompress_jobs.llm.corpus import INPUT, PROMPTS
from kompress_jobs.runtimes.generative import Generation
from kompress_jobs.spec.goals import Benchmark, Goals

pytestmark = pytest.mark.unit


class Prefill:
    """A build whose prefill takes `ms`, whatever the prompt."""

    def __init__(self, ms: float):
        self.ms, self.prompts = ms, []

    def generate(self, prompt, new_tokens):
        self.prompts.append(prompt.shape)
        return Generation(first_token_ns=int(self.ms * 1e6), step_ns=[1000] * (new_tokens - 1),
                          tokens=np.zeros((len(prompt), new_tokens), np.int64))


def context(limit: float | None):
    prompts = SimpleNamespace(inputs={INPUT: np.zeros((4, 512), np.int64)})
    dataset = SimpleNamespace(splits={PROMPTS: prompts}, split=lambda name: prompts)
    return SimpleNamespace(goals=Goals(max_time_to_first_token_ms=limit), benchmark=Benchmark(batch_sizes=[1, 4]),
                           dataset=dataset, log=lambda message: None)


def test_a_build_whose_prefill_breaks_the_goal_is_not_kept_and_says_why():
    slow, quick = Prefill(753), Prefill(513)
    runners = {1: slow, 2: quick}
    trials = [{"number": 1, "settings": "INT4"}, {"number": 2, "settings": "INT8"}]
    search._keep_first_token_goal(runners, trials, context(600))
    assert list(runners) == [2]
    assert trials[0]["verdict"] == "first token 753 ms exceeds goals.maxTimeToFirstTokenMs 600"
    assert trials[1]["timeToFirstTokenMs"] == 513.0 and "verdict" not in trials[1]
    assert quick.prompts[0] == (1, 512)  # the benchmark's prompt, at its first batch size


def test_no_build_within_the_first_token_goal_fails_the_pass_naming_the_quickest():
    with pytest.raises(PassError, match="no build kept goals.maxTimeToFirstTokenMs 100 \\(the quickest first token: 513 ms\\)"):
        search._keep_first_token_goal({1: Prefill(753), 2: Prefill(513)}, [{"number": 1, "settings": "a"},
                                                                          {"number": 2, "settings": "b"}], context(100))


def test_without_the_goal_nothing_is_timed():
    build = Prefill(753)
    search._keep_first_token_goal({1: build}, [{"number": 1, "settings": "a"}], context(None))
    assert build.prompts == []


def test_a_pick_with_a_later_first_token_says_so():
    from kompress_jobs.reporting.results import Report

    def candidate(first):
        return SimpleNamespace(latency={1: SimpleNamespace(time_to_first_token_ms=first)})

    run = SimpleNamespace(generative=True, primary_batch_size=1, baseline=candidate(615.0), best=candidate(753.0))
    said = Report.later_first_token.fget(run)
    assert said == ("its first token comes later than the baseline's (753 ms against 615 ms at batch 1, "
                    "1.22×): set goals.maxTimeToFirstTokenMs if prefill matters")
    assert Report.later_first_token.fget(SimpleNamespace(**{**vars(run), "best": candidate(500.0)})) is None
    assert Report.later_first_token.fget(SimpleNamespace(**{**vars(run), "generative": False})) is None


class Crashing(Prefill):
    """A build whose runtime dies when it generates (runtimes/contained.py reports it so)."""

    def generate(self, prompt, new_tokens):
        from kompress_jobs.errors import RuntimeCrashed

        raise RuntimeCrashed("model file b.gguf: llama.cpp was killed by signal 11 generating, in a process of its own")


def test_a_build_that_crashes_while_timed_is_not_kept_and_the_search_goes_on():
    runners, trials = {1: Crashing(1), 2: Prefill(513)}, [{"number": 1, "settings": "IQ4_XS"}, {"number": 2, "settings": "Q8_0"}]
    search._keep_first_token_goal(runners, trials, context(600))
    assert list(runners) == [2] and trials[0]["verdict"].startswith("failed while timed: model file b.gguf: llama.cpp was killed")
    speeds_failures: dict[int, str] = {}
    speeds = search._tokens_per_second({0: Prefill(1), 3: Crashing(1), 2: Prefill(1)}, np.zeros((1, 64), np.int64),
                                       speeds_failures)
    assert set(speeds) == {0, 2} and "killed by signal 11" in speeds_failures[3]
    with pytest.raises(PassError, match="every build that kept the goal failed while timed"):
        search._keep_first_token_goal({1: Crashing(1)}, [{"number": 1, "settings": "IQ4_XS"}], context(600))
