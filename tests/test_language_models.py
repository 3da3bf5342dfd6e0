"""Causal language models through the pipeline: loading, the text, perplexity against a hand
computation, the ONNX Runtime GenAI builder pass, the generation benchmark and the bad inputs a user
meets, on a tiny random Llama with a BPE tokenizer trained on license text (seconds)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from kompress_jobs.errors import DataError, ModelLoadError, SpecError
from kompress_jobs.llm.corpus import load_corpus
from kompress_jobs.llm.loading import check_round_trip, gguf_architecture, load_tokenizer
from kompress_jobs.llm.quality import LanguageModelScorer
from kompress_jobs.modelfile import ModelFile
from kompress_jobs.runtimes import make_runner
from kompress_jobs.spec.schema import ModelOptimization
from kompress_jobs.spec.sources import ModelFormat
from kompress_jobs.spec.tasks import Task

from .llm_fixtures import license_text, llm_resource, tiny_llama, train_tokenizer

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _model(folder: Path) -> ModelFile:
    return ModelFile(folder, ModelFormat.HUGGING_FACE, generative=True)


def _resource(**overrides) -> ModelOptimization:
    return ModelOptimization.model_validate(llm_resource("m", "t", **overrides))


def test_perplexity_is_the_exponential_of_the_mean_next_token_loss_computed_by_hand(llama):
    import torch
    from transformers import AutoModelForCausalLM

    task = Task(type="LanguageModeling", context_length=32, stride=16, evaluation_tokens=96)
    tokenizer = load_tokenizer(_model(llama))
    dataset = load_corpus(license_text(), _resource().spec.data, task, tokenizer)
    windows = dataset.evaluation.inputs["input_ids"]
    assert windows.shape == (5, 32)  # starts 0, 16, 32, 48, 64 within 96 tokens

    scorer = LanguageModelScorer(task, _resource().spec.goals.accuracy_drop_mode, dataset.evaluation,
                                 make_runner(_model(llama), threads=1))
    # by hand: the first window scores all 31 predictions, each later one its last 16 tokens
    module = AutoModelForCausalLM.from_pretrained(str(llama)).eval()
    losses = []
    with torch.no_grad():
        for index, window in enumerate(torch.from_numpy(windows)):
            log_probs = torch.log_softmax(module(window[None]).logits[0].double(), -1)
            first = 1 if index == 0 else 16
            losses += [-log_probs[t - 1, window[t]].item() for t in range(first, 32)]
    assert len(losses) == 31 + 4 * 16
    value, drop, figures = scorer.baseline()
    assert value == pytest.approx(math.exp(sum(losses) / len(losses)), rel=1e-4)
    assert figures["scoredTokens"] == len(losses) and drop == 0.0
    assert figures["top1Agreement"] == 1.0 and abs(figures["klDivergence"]) < 1e-9


def test_onnx_genai_fp32_matches_pytorch_and_int4_is_smaller_and_judged_against_it(llama, tmp_path):
    from kompress_jobs.passes import PassContext, build_pass
    from kompress_jobs.passes.onnx_genai import OnnxGenAIPass

    task = Task(type="LanguageModeling", context_length=64, evaluation_tokens=256)
    tokenizer = load_tokenizer(_model(llama))
    dataset = load_corpus(license_text(), _resource().spec.data, task, tokenizer)
    built = {}
    for precision in ("Fp32", "Int4"):
        out = tmp_path / precision
        out.mkdir()
        step = build_pass(OnnxGenAIPass(type="OnnxGenAI", precision=precision))
        built[precision] = step.run(_model(llama), PassContext(out, dataset, lambda m: None, task=task))
        assert built[precision].format is ModelFormat.ONNX_GENAI and (out / "genai_config.json").is_file()
    assert built["Int4"].size_bytes < 0.6 * built["Fp32"].size_bytes

    baseline = make_runner(_model(llama), threads=1)
    scorer = LanguageModelScorer(task, _resource().spec.goals.accuracy_drop_mode, dataset.evaluation, baseline)
    fp32 = make_runner(built["Fp32"], threads=1)
    value, drop, figures = scorer.judge(fp32)
    assert abs(drop) < 0.01 and figures["top1Agreement"] > 0.99  # the same weights, another runtime
    prompt = dataset.evaluation.inputs["input_ids"][:1, :16]
    assert np.array_equal(fp32.generate(prompt, 8).tokens, baseline.generate(prompt, 8).tokens)
    generation = make_runner(built["Int4"], threads=1).generate(prompt, 8)
    assert generation.tokens.shape == (1, 8) and len(generation.step_ns) == 7 and generation.first_token_ns > 0


def test_openvino_fp32_is_the_baseline_on_another_runtime_and_its_weight_compression_is_steered_by_the_goal(llama, tmp_path):
    from kompress_jobs.spec.goals import Goals
    from kompress_jobs.passes import PassContext, build_pass
    from kompress_jobs.passes.openvino_llm import OpenVinoCausalLM, OpenVinoCausalLMPass

    task = Task(type="LanguageModeling", context_length=64, evaluation_tokens=128)
    dataset = load_corpus(license_text(), _resource().spec.data, task, load_tokenizer(_model(llama)))
    goals = Goals(max_accuracy_drop=5, accuracy_drop_mode="Relative")
    baseline = make_runner(_model(llama), threads=1)
    scorer = LanguageModelScorer(task, goals.accuracy_drop_mode, dataset.evaluation, baseline)
    prompt = dataset.evaluation.inputs["input_ids"][:2, :16]

    def build(name: str, **settings):
        out = tmp_path / "candidates" / name  # one run's candidates: the exported IR is shared by the three
        out.mkdir(parents=True)
        step = build_pass(OpenVinoCausalLMPass(type="OpenVinoCausalLM", **settings))
        return step, step.run(_model(llama), PassContext(out, dataset, lambda m: None, task=task, goals=goals))

    _, fp32 = build("fp32", weights="Fp32")
    assert fp32.format is ModelFormat.OPENVINO_CAUSAL_LM and (fp32.path / "openvino_model.xml").is_file()
    runner = make_runner(fp32, threads=1)
    _, drop, figures = scorer.judge(runner)
    assert abs(drop) < 0.01 and figures["top1Agreement"] == 1.0  # the same weights on OpenVINO
    # the cache lives in the model: a batch of two prompts generates what PyTorch generates, step by step
    assert np.array_equal(runner.generate(prompt, 8).tokens, baseline.generate(prompt, 8).tokens)
    check_round_trip(load_tokenizer(_model(llama)), fp32.path, license_text("MPL-2.0").read_text()[:1000])

    _, int8 = build("int8", weights="Int8", kvCachePrecision="U8")
    int8_runner = make_runner(int8, threads=1)
    assert int8.precision == "int8" and int8.size_bytes < 0.55 * fp32.size_bytes
    assert int8_runner.kv_cache_precision == "u8"  # carried by the model's runtime options, read when compiled
    assert scorer.judge(int8_runner)[1] < 5

    step, auto = build("auto", weights="Auto")
    details = step.details
    assert [t["settings"] for t in details["trials"]] == [s.trial_label for s in step.spec.ladder()]
    assert "Int4 symmetric group 64, 80% of layers (rest Int8), AWQ, scale estimation" in [t["settings"] for t in details["trials"]]
    keepers = [t for t in details["trials"] if t["drop"] is not None and t["drop"] <= 5]
    assert keepers and all("tokensPerSecond" in t for t in keepers), details["trials"]
    chosen = details["trials"][details["chosenTrial"] - 1]
    assert chosen["tokensPerSecond"] == max(t["tokensPerSecond"] for t in keepers)
    assert auto.precision == step.spec.ladder()[details["chosenTrial"] - 1].precision_label
    assert not list((tmp_path / "candidates").glob("_auto-trial-*"))
    assert "Chosen: build" in "\n".join(OpenVinoCausalLM.report_section("auto", details))


def test_openvino_language_model_settings_folders_and_a_missing_exporter_are_refused_naming_what_to_fix(tmp_path, monkeypatch):
    import openvino as ov

    from kompress_jobs.passes import build_pass
    from kompress_jobs.passes.openvino_llm import OpenVinoCausalLMPass
    from kompress_jobs.runtimes.openvino_causal_lm import OpenVinoCausalLmRunner

    with pytest.raises(ValueError, match="weights Int8: ratio and the data-aware options .* apply to weights Int4 only"):
        OpenVinoCausalLMPass(type="OpenVinoCausalLM", weights="Int8", awq=True)
    monkeypatch.setenv("KOMPRESS_OPENVINO_EXPORTER", str(tmp_path / "nowhere"))
    reason = build_pass(OpenVinoCausalLMPass(type="OpenVinoCausalLM")).not_applicable_reason()
    assert reason.startswith(f"optimum-intel's OpenVINO exporter is not installed in {tmp_path / 'nowhere'}")
    assert "requirements/openvino-exporter.txt" in reason

    folder = tmp_path / "lm"
    folder.mkdir()
    from kompress_jobs.planning.preflight import check_local_inputs

    spec = _resource(model={"uri": str(folder), "format": "OpenVINOCausalLM"}, data={"uri": str(license_text())}).spec
    with pytest.raises(SpecError, match=r"spec.model.uri: .*lm is not an OpenVINO causal LM folder \(a folder with openvino_model.xml\)"):
        check_local_inputs(spec, tmp_path)  # what `kompress validate` says
    with pytest.raises(ModelLoadError, match="no openvino_model.xml"):
        OpenVinoCausalLmRunner(ModelFile(folder, ModelFormat.OPENVINO_CAUSAL_LM, generative=True))
    x = ov.opset13.parameter([1, 4], ov.Type.f32, name="input_ids")  # a plain IR: no cache inside
    ov.save_model(ov.Model([ov.opset13.relu(x)], [x]), str(folder / "openvino_model.xml"))
    (folder / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="is not a stateful causal LM"):
        OpenVinoCausalLmRunner(ModelFile(folder, ModelFormat.OPENVINO_CAUSAL_LM, generative=True))


def test_a_language_model_run_reports_perplexity_tokens_per_second_and_time_to_first_token(llama, tmp_path):
    from kompress_jobs.pipeline.run import run_optimization
    from kompress_jobs.storage.promotion import CONTENDER

    resource = ModelOptimization.model_validate(llm_resource(str(llama), str(license_text()), passes=[
        {"type": "OnnxGenAI", "name": "genai-fp32", "precision": "Fp32", "input": "baseline"},
        {"type": "OnnxGenAI", "name": "genai-int8", "precision": "Int8", "input": "baseline"}], promotion={}))
    first = run_optimization(resource, artifacts_uri=str(tmp_path / "runs"), run_id="r1")
    assert first.promotion.decision.value == "Promoted"
    # the promoted GenAI folder comes back as a contender, measured as a language model like the rest
    result = run_optimization(resource, artifacts_uri=str(tmp_path / "runs"), run_id="r2")
    contender = next(c for c in result.results.candidates if c.name == CONTENDER)
    assert contender.measured and contender.format.value == "OnnxGenAI" and contender.latency[1].time_to_first_token_ms > 0
    assert result.promotion.decision.value in ("Kept", "Promoted") and result.promotion.run_id in ("r1", "r2")
    report = result.results
    assert report.generative and report.metric == "Perplexity"
    by_name = {c.name: c for c in report.candidates}
    assert set(by_name) == {"baseline", "genai-fp32", "genai-int8", CONTENDER}
    for c in by_name.values():
        assert c.measured, c.error
        stats = c.latency[1]
        rounds = len(stats.round_medians_ms)  # 2, and up to 6 (3 × rounds) while one is noisy: all alike
        assert rounds == len(by_name["baseline"].latency[1].round_medians_ms) and 2 <= rounds <= 6
        assert stats.samples == rounds * 7  # rounds × (new tokens − 1) decode steps
        assert stats.noisy == (rounds == 6 and stats.spread > report.benchmark.tie_tolerance)
        assert stats.time_to_first_token_ms > 0 and stats.throughput_per_second == pytest.approx(1000 / stats.mean_ms)
        assert {"perplexity", "top1Agreement", "klDivergence", "greedyAgreement"} <= set(c.metric.fidelity)
    assert by_name["genai-fp32"].metric.drop == pytest.approx(0, abs=0.01)
    assert report.best_name in ("genai-fp32", "genai-int8")
    wire = result.report["candidates"][0]["latency"]["1"]
    assert wire["time_to_first_token_ms"] > 0
    markdown = (Path(result.run_uri) / "report.md").read_text()
    assert "## Generation" in markdown and "decode tokens/s" in markdown
    files = {p.relative_to(Path(result.run_uri)).as_posix() for p in Path(result.run_uri).rglob("*") if p.is_file()}
    folder = by_name["genai-int8"].artifact  # the builder's whole folder, under the candidate
    assert folder == "candidates/genai-int8/genai-int8"
    assert {f"{folder}/genai_config.json", f"{folder}/model.onnx", f"{folder}/tokenizer.json"} <= files


# Bad input, each one line naming what to fix.

def test_text_shorter_than_one_window_is_refused_naming_the_context_length(llama, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Only a few words here.")
    task = Task(type="LanguageModeling", context_length=64, evaluation_tokens=64)
    with pytest.raises(DataError, match=r"shorter than one window \(task.contextLength 64\)"):
        load_corpus(short, _resource().spec.data, task, load_tokenizer(_model(llama)))


def test_text_that_is_not_utf8_is_refused(tmp_path, llama):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\x80\x81\xfe" * 100)
    with pytest.raises(DataError, match="plain UTF-8 text"):
        load_corpus(binary, _resource().spec.data, Task(type="LanguageModeling"), load_tokenizer(_model(llama)))


def test_a_prompt_longer_than_the_model_context_is_refused_naming_the_field(tmp_path):
    from kompress_jobs.pipeline.run import run_optimization

    short_context = tiny_llama(tmp_path / "llama", max_positions=48)
    resource = ModelOptimization.model_validate(llm_resource(
        str(short_context), str(license_text()), task={"type": "LanguageModeling", "contextLength": 32, "evaluationTokens": 64},
        benchmark={"batchSizes": [1], "rounds": 1, "generation": {"promptTokens": 40, "newTokens": 16}}))
    with pytest.raises(DataError, match=r"benchmark.generation.promptTokens \+ newTokens \(40 \+ 16\) .* context \(48 positions\)"):
        run_optimization(resource, artifacts_uri=str(tmp_path / "runs"))


def test_a_gguf_of_an_architecture_transformers_cannot_read_is_refused_with_the_reason(tmp_path):
    import gguf

    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(path), "nonesuch")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match=r"cannot read GGUF models of architecture 'nonesuch' \(it reads .*llama"):
        gguf_architecture(path)
    not_gguf = tmp_path / "other.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelLoadError, match="not a readable GGUF file"):
        gguf_architecture(not_gguf)


def test_a_tokenizer_that_does_not_survive_a_round_trip_is_refused(tmp_path, llama):
    other = tmp_path / "other"
    train_tokenizer(other, vocabulary=300)  # another vocabulary written where the model's should be
    with pytest.raises(ModelLoadError, match="does not survive being saved and reloaded .* token ids differ"):
        check_round_trip(load_tokenizer(_model(llama)), other, license_text().read_text()[:500])
    check_round_trip(load_tokenizer(_model(llama)), llama, license_text().read_text()[:500])  # its own holds


def test_an_encoder_checkpoint_is_refused_as_a_language_model(tmp_path):
    from .transformer_fixtures import tiny_bert

    with pytest.raises(ModelLoadError, match="names no …ForCausalLM architecture"):
        make_runner(_model(tiny_bert(tmp_path / "bert")), threads=1)


@pytest.mark.parametrize("change, message", [
    ({"model": {"uri": "m.onnx", "format": "ONNX"}}, "model.format ONNX is not a causal language model format"),
    ({"tuning": {"trials": 4, "searchSpace": [{"pass": "genai-fp32", "parameter": "blockSize", "choices": [32, 64]}]}},
     "tuning: a tuning study does not run on task LanguageModeling yet"),
    ({"task": {"type": "LanguageModeling", "contextLength": 512, "evaluationTokens": 256}},
     "evaluationTokens 256 is shorter than one window"),
    ({"task": {"type": "LanguageModeling", "contextLength": 64, "stride": 128}}, "stride 128 is longer than contextLength 64"),
])
def test_language_model_specs_that_cannot_run_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        ModelOptimization.model_validate(llm_resource("m", "t", **change))


def test_gguf_needs_the_language_modeling_task_and_passes_must_fit_the_task():
    from kompress_jobs.planning.plan import plan_passes

    with pytest.raises(ValueError, match="GGUF holds a causal language model: it needs task.type: LanguageModeling"):
        ModelOptimization.model_validate(llm_resource("m.gguf", "t", model_format="GGUF", task={"type": "Fidelity"}))
    wrong_pass = _resource(passes=[{"type": "Int4WeightOnly"}])
    with pytest.raises(SpecError, match=r"passes\[0\].type: Int4WeightOnly works on models that are called once per batch"):
        plan_passes(wrong_pass.spec)
    encoder = ModelOptimization.model_validate(yaml.safe_load((Path(__file__).parents[1] / "examples/sentence-embeddings.yaml").read_text()))
    encoder.spec.passes = [_resource().spec.passes[0]]
    with pytest.raises(SpecError, match=r"OnnxGenAI works on causal language models"):
        plan_passes(encoder.spec)


def test_precision_auto_builds_the_ladder_judges_each_on_the_calibration_text_and_keeps_the_fastest_within_the_goal(llama, tmp_path):
    from kompress_jobs.spec.goals import Goals
    from kompress_jobs.passes import PassContext, build_pass
    from kompress_jobs.passes.onnx_genai import OnnxGenAI, OnnxGenAIPass
    from kompress_jobs.units import human_size  # noqa: F401  (the section renders sizes with it)

    task = Task(type="LanguageModeling", context_length=64, evaluation_tokens=128)
    dataset = load_corpus(license_text(), _resource().spec.data, task, load_tokenizer(_model(llama)))
    assert len(dataset.calibration) > 0
    goals = Goals(max_accuracy_drop=5, accuracy_drop_mode="Relative")
    step = build_pass(OnnxGenAIPass(type="OnnxGenAI", precision="Auto"))
    out = tmp_path / "auto"
    out.mkdir()
    model = step.run(_model(llama), PassContext(out, dataset, lambda m: None, task=task, goals=goals))
    details = step.details
    assert [t["settings"] for t in details["trials"]] == [s.trial_label for s in step.spec.ladder()]
    keepers = [t for t in details["trials"] if t["drop"] is not None and t["drop"] <= 5]
    assert keepers and all("tokensPerSecond" in t for t in keepers)
    chosen = details["trials"][details["chosenTrial"] - 1]
    assert chosen["tokensPerSecond"] == max(t["tokensPerSecond"] for t in keepers)
    assert (out / "genai_config.json").is_file() and model.precision == step.spec.ladder()[details["chosenTrial"] - 1].precision_label
    assert not list(tmp_path.glob("_auto-trial-*"))  # the other builds are gone
    section = "\n".join(OnnxGenAI.report_section("auto", details))
    assert f"Chosen: build {details['chosenTrial']}" in section and "Int8 Rtn block 32" in section


def test_generation_goals_reject_a_candidate_below_the_decode_speed_or_over_the_first_token_time():
    from kompress_jobs.measurement.benchmark import Latency
    from kompress_jobs.measurement.candidates import Candidate
    from kompress_jobs.spec.goals import Benchmark, Goals
    from kompress_jobs.measurement.selection import judge
    from kompress_jobs.spec.tasks import Metric

    def measured(name, step_ms, first_ms, parent="baseline"):
        stats = Latency.of_rounds([step_ms], batch_size=1, p50_ms=step_ms, p95_ms=step_ms, p99_ms=step_ms, mean_ms=step_ms,
                                  throughput_per_second=1000 / step_ms, samples=7, time_to_first_token_ms=first_ms)
        return Candidate(name=name, technique="t", pass_type="OnnxGenAI", parent=None if name == "baseline" else parent,
                         lineage=[], metric_drop=0.0, latency={1: stats},
                         model=ModelFile(Path("m"), ModelFormat.ONNX_GENAI, generative=True))

    baseline, slow, late, good = (measured("baseline", 100, 500), measured("slow", 40, 400), measured("late", 20, 900),
                                  measured("good", 25, 450))
    for c in (slow, late, good):
        c.model = None  # size is not judged here
    goals = Goals(min_tokens_per_second=30, max_time_to_first_token_ms=600)
    judge([baseline, slow, late, good], goals, Benchmark(batch_sizes=[1]), Metric.PERPLEXITY)
    assert slow.rejected_reasons == ["25.0 decode tokens/s at batch 1 is below 30"]
    assert late.rejected_reasons == ["time to first token 900 ms at batch 1 exceeds 600 ms"]
    assert good.rejected_reasons == []
    with pytest.raises(ValueError, match="goals.minTokensPerSecond: a goal on generation needs task.type: LanguageModeling"):
        ModelOptimization.model_validate(_encoder_with(min_tokens=1))


def _encoder_with(min_tokens: float) -> dict:
    resource = yaml.safe_load((Path(__file__).parents[1] / "examples/sentence-embeddings.yaml").read_text())
    resource["spec"]["goals"]["minTokensPerSecond"] = min_tokens
    return resource


CHATML = ("{% for m in messages %}<|endoftext|>{{ m['role'] }}\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|endoftext|>assistant\n{% endif %}")


def _chat_spec(model: Path, chat_template: bool):
    return ModelOptimization.model_validate(llm_resource(
        str(model), str(license_text()),
        benchmark={"batchSizes": [1, 2], "rounds": 1, "generation": {"promptTokens": 24, "newTokens": 4, "chatTemplate": chat_template}})).spec


def test_prompts_in_the_chat_template_keep_the_prompt_length_and_wrap_text_from_the_evaluation_split(tmp_path):
    import json

    from kompress_jobs.pipeline import language_model as stages
    from kompress_jobs.llm.corpus import PROMPTS

    model = tiny_llama(tmp_path / "chat-llama")
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": CHATML}))
    dataset, _, runner = stages.load(_chat_spec(model, True), model, license_text(), lambda _: None)
    framed = dataset.split(PROMPTS).inputs["input_ids"]
    tokenizer = load_tokenizer(_model(model))
    assert framed.shape == (2, 24)  # the largest batch, every prompt promptTokens long, the template's tokens included
    text = tokenizer.decode(framed[0])
    assert text.startswith("<|endoftext|>user\n") and text.endswith("<|endoftext|>\n<|endoftext|>assistant\n"), text
    body = tokenizer.decode(framed[0][len(tokenizer("<|endoftext|>user\n", add_special_tokens=False).input_ids):])
    assert body.split("<|endoftext|>")[0] in license_text().read_text()  # the evaluation text, inside the frame
    plain, _, _ = stages.load(_chat_spec(model, False), model, license_text(), lambda _: None)
    assert tokenizer.decode(plain.split(PROMPTS).inputs["input_ids"][0]) in license_text().read_text()
    assert runner.generate(framed[:1], 4).tokens.shape == (1, 4)  # the runner takes them as any prompt


def test_asking_for_the_chat_template_of_a_model_without_one_is_refused_naming_the_field(llama):
    from kompress_jobs.pipeline import language_model as stages

    with pytest.raises(DataError, match=r"^benchmark.generation.chatTemplate: the model's tokenizer \(\w+\) has no chat template"):
        stages.load(_chat_spec(llama, True), llama, license_text(), lambda _: None)


def test_a_chat_template_that_reaches_for_python_objects_is_refused_naming_the_field(tmp_path):
    """A tenant's tokenizer_config.json is code for Jinja: transformers' sandbox stops it, kompress says so."""
    from kompress_jobs.llm.loading import chat_frame

    tokenizer = train_tokenizer(tmp_path / "tokenizer")
    tokenizer.chat_template = "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(DataError, match=r"^benchmark.generation.chatTemplate: the model's chat template cannot be rendered \(SecurityError"):
        chat_frame(tokenizer)
