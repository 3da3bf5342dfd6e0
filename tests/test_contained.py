"""Native runtimes in a process of their own (runtimes/contained.py): a crash or a hang, at load or
in any later call, costs one candidate with the signal named, and the benchmark goes on with the
others; the pipe carries arrays and errors as they are, whatever the library prints; timing
happens where the model runs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from kompress_jobs.errors import DataError, KompressError, ModelLoadError, RuntimeCrashed
from kompress_jobs.measurement.benchmark import measure_latency
from kompress_jobs.measurement.candidates import Candidate, Outcome, fail_benchmarked
from kompress_jobs.modelfile import ModelFile, Processor
from kompress_jobs.runtimes import contained
from kompress_jobs.runtimes.contained import ContainedRunner, contained_runner
from kompress_jobs.spec.goals import Benchmark
from kompress_jobs.spec.sources import ModelFormat

from .contained_runners import Scripted, ScriptedLanguageModel

pytestmark = pytest.mark.unit

X = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}


def scripted(tmp_path, name="model", **script) -> ContainedRunner:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(script))
    return contained_runner(Scripted, ModelFile(path, ModelFormat.ONNX), threads=1, device=Processor.CPU, input_names=None)


def test_a_runner_runs_in_a_process_of_its_own_and_its_chatter_never_reaches_the_pipe(tmp_path):
    runner = scripted(tmp_path)
    got = runner(X)
    np.testing.assert_array_equal(got["y"], X["x"] * 2)
    assert int(got["pid"][0]) != os.getpid()
    assert runner.input_names == ("x",) and runner.output_names == ("y",) and runner.runtime == "scripted"
    timings, cpu_ns = runner.time_calls(X, 5)  # timed in the child: five figures, no pipe in them
    assert len(timings) == 5 and all(t > 0 for t in timings) and cpu_ns >= 0


def test_errors_keep_their_kind_and_the_process_lives_on(tmp_path):
    runner = scripted(tmp_path)
    with pytest.raises(DataError, match="this model takes at most 4 rows"):
        runner({"x": np.zeros((5, 3), np.float32)})
    with pytest.raises(RuntimeError, match="expected a matrix, got 3 dimensions"):  # the library's own error
        runner({"x": np.zeros((1, 3, 1), np.float32)})
    with pytest.raises(DataError, match=r"input .x. of shape \(3, 1\) \(float32\) per sample does not fit the model: expected"):
        runner.check_input({"x": np.zeros((1, 3, 1), np.float32)})
    assert runner(X)["y"].shape == (2, 3)  # an error is not a crash


def test_a_crash_while_loading_is_a_model_load_error_naming_the_signal(tmp_path):
    with pytest.raises(ModelLoadError, match=r"scripted was killed by signal 11 loading it, in a process of its own "
                                             r"\(.*\); this candidate is left out"):
        scripted(tmp_path, crashAtLoad=True)


def test_a_crash_at_a_later_call_costs_that_runner_for_good(tmp_path):
    runner = scripted(tmp_path, crashAtCall=2)
    runner(X)
    with pytest.raises(RuntimeCrashed, match="scripted was killed by signal 11 running it, in a process of its own"):
        runner(X)
    with pytest.raises(RuntimeCrashed, match="killed by signal 11 running it"):  # dead stays dead, at once
        runner(X)


def test_a_hang_is_stopped_at_the_call_timeout(tmp_path, monkeypatch):
    runner = scripted(tmp_path, hangAtCall=1)
    monkeypatch.setattr(contained, "CALL_TIMEOUT_S", 2)
    with pytest.raises(RuntimeCrashed, match="scripted did not answer within 2 s running it"):
        runner(X)
    assert runner._process.poll() is not None  # the hung process was stopped


def test_a_runner_that_crashes_mid_benchmark_is_a_failed_candidate_and_the_others_are_measured(tmp_path):
    # call 1: warm-up; 2 and 3 are each a round of one timed call... the crash comes in round 2
    runners = {"steady": scripted(tmp_path, "steady"), "crashing": scripted(tmp_path, "crashing", crashAtCall=3)}
    settings = Benchmark(batchSizes=[1], rounds=4, warmup=1, iterations=1)
    failures: dict[str, str] = {}
    latencies = measure_latency(runners, X, settings, failures=failures)
    assert set(latencies) == {"steady"} and len(latencies["steady"][1].round_medians_ms) == 4
    assert "crashing" in failures and "killed by signal 11 timing it" in failures["crashing"]
    candidates = [Candidate(name, "t", "T", "baseline", []) for name in ("steady", "crashing")]
    kept = fail_benchmarked(candidates, runners, failures)
    assert [c.name for c in kept] == ["steady"] and "crashing" not in runners
    assert candidates[1].outcome is Outcome.FAILED and candidates[1].error.startswith("benchmark failed: model file")
    with pytest.raises(KompressError, match="the baseline failed while it was benchmarked"):
        fail_benchmarked([Candidate("crashing", "t", None, None, [])], {}, failures)
    with pytest.raises(RuntimeCrashed):  # without a place to record it, the failure ends the benchmark
        measure_latency({"crashing": scripted(tmp_path, "again", crashAtCall=1)}, X, settings)


def test_a_language_model_generates_in_its_process_and_a_crash_mid_benchmark_costs_only_it(tmp_path):
    from types import SimpleNamespace

    from kompress_jobs.data import Split
    from kompress_jobs.llm.benchmark import measure_generation
    from kompress_jobs.llm.corpus import INPUT
    from kompress_jobs.runtimes.generative import GenerativeRunner

    def language_model(name, **script):
        path = tmp_path / f"{name}.gguf"
        path.write_text(json.dumps(script))
        return contained_runner(ScriptedLanguageModel, ModelFile(path, ModelFormat.GGUF, generative=True), threads=1,
                                device=Processor.CPU, input_names=None)

    crashing, steady = language_model("crashing", crashAtGeneration=3), language_model("steady")
    assert isinstance(crashing, GenerativeRunner) and crashing.max_positions == 64
    ids = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(crashing.logits(ids).argmax(-1), ids + 1)
    done = crashing.generate(ids, 4)  # its first generation
    assert done.tokens.tolist() == [[4, 5, 6, 7]] and len(done.step_ns) == 3 and done.cpu_ns > 0
    dataset = SimpleNamespace(split=lambda name: Split({INPUT: ids}))
    failures: dict[str, str] = {}
    latencies, continuations = measure_generation({"crashing": crashing, "steady": steady}, dataset,
                                                  Benchmark(batchSizes=[1], rounds=3, warmup=0, generation={"newTokens": 8}),
                                                  failures=failures)
    # round 1 is its second generation, round 2 its third: it crashes there; steady runs every round
    assert set(latencies) == {"steady"} and set(continuations) == {"steady"}
    assert len(latencies["steady"][1].round_medians_ms) == 3
    assert "scripted-lm was killed by signal 11 generating" in failures["crashing"]


def test_what_the_pipe_reads_is_json_and_plain_arrays_within_bounds():
    """A process taken over by a crafted model file can only send data: a pickled object array, a
    header that is not JSON or a length meant to exhaust memory is refused, never loaded."""
    import io
    import pickle
    import struct

    from kompress_jobs.runtimes.pipe import PipeError, decode, encode

    def reader(data: bytes):
        stream = io.BytesIO(data)
        return lambda n: stream.read(n)

    header, arrays = decode(reader(encode({"op": "call"}, {"x": np.arange(3)})))
    assert header == {"op": "call"} and arrays["x"].tolist() == [0, 1, 2]
    objects = encode({}, {"x": np.array([{"a": 1}], dtype=object)})  # np.savez pickles object arrays
    with pytest.raises(PipeError, match="not a message"):
        decode(reader(objects))
    with pytest.raises(PipeError, match="not a message"):
        decode(reader(struct.pack("<QQ", 5, 0) + pickle.dumps(1)[:5]))
    with pytest.raises(PipeError, match="a message of 8 \\+ 18446744073709551615 bytes"):
        decode(reader(struct.pack("<QQ", 8, 2 ** 64 - 1)))
