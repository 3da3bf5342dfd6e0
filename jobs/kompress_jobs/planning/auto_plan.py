"""A plan for a spec that writes no passes: chosen from the model's format and task and from the
machine the Job landed on. Each pass the plan considers is asked whether it applies here (its own
not_applicable_reason: a missing package, no GPU, a CPU without native BF16), so the plan and the
passes never disagree; what was left out is said, with the reason, in the report.

- a causal language model: the steered builds of every language-model runtime installed (ONNX
  Runtime GenAI, OpenVINO, and llama.cpp for a GGUF file, also as kept);
- anything else: ONNX export where the model is not ONNX, then AutoQuantize (INT8 on ONNX Runtime
  and OpenVINO side by side, BF16 where the CPU computes it); on a GPU Job, FP16 in PyTorch through
  torch.compile, ONNX Runtime on CUDA, and TensorRT where it is installed;
- a BERT-family encoder whose goal leaves room (a drop of a point or more) and whose spec.budget
  allows it (30 minutes or more): also structured compression, quantized in turn, with a study of
  how much to remove judged after quantization, so compression and quantization share the goal
  instead of compression spending it first.

A hand-written pass list always wins: the plan is made only when `spec.passes` is empty."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..measurement.hardware import cpu_flags, cpu_lacks
from ..passes import PASSES, build_pass
from ..spec.schema import ModelOptimization
from ..spec.sources import Device, ModelFormat
from ..spec.tuning_spec import Tuning

_ONNX_PRODUCERS = frozenset({ModelFormat.TORCH_SCRIPT, ModelFormat.TORCH_EXPORT, ModelFormat.HUGGING_FACE})


@dataclass
class Plan:
    passes: list[dict]  # as a user would write them
    reasons: list[str] = field(default_factory=list)  # why each was planned or left out
    automatic: bool = True
    tuning: dict | None = None  # a study the plan asks for (structured compression's amounts)

    def to_wire(self) -> dict:
        return {"automatic": self.automatic, "passes": self.passes, "reasons": self.reasons,
                **({"tuning": self.tuning} if self.tuning else {})}


def plan_for(resource: ModelOptimization, folder: Path = Path(".")) -> Plan:
    """The passes to run: the spec's own, or a plan for this machine (`folder`: where the spec's
    relative paths are read from)."""
    spec = resource.spec
    if spec.passes:
        return Plan([p.to_wire() for p in spec.passes], ["written in spec.passes"], automatic=False)
    considered = _language_model_passes(spec) if spec.task.generative else _model_passes(spec, folder)
    plan = Plan([])
    for settings, why in considered:
        if "skip" in settings:
            plan.reasons.append(f"{settings['name']} ({settings['type']}) left out: {settings['skip']}")
            continue
        reason = build_pass(_settings(settings)).not_applicable_reason()
        if reason:
            plan.reasons.append(f"{settings['name']} ({settings['type']}) left out: {reason}")
        else:
            plan.passes.append(settings)
            plan.reasons.append(f"{settings['name']} ({settings['type']}): {why}")
    if not plan.passes:
        plan.reasons.append("nothing applies here: the run measures the baseline alone")
    if any(p["name"] == COMPRESSED for p in plan.passes):
        plan.tuning = COMPRESSION_STUDY
    return plan


def planned(resource: ModelOptimization, folder: Path = Path(".")) -> tuple[ModelOptimization, Plan]:
    """The resource with its plan written into spec.passes (the report then lists the spec that ran)."""
    plan = plan_for(resource, folder)
    if not plan.automatic:
        return resource, plan
    update = {"passes": [_settings(p) for p in plan.passes]}
    if plan.tuning:
        update["tuning"] = Tuning.model_validate(plan.tuning)
    spec = resource.spec.model_copy(update=update)
    return resource.model_copy(update={"spec": spec}), plan


def _settings(wire: dict):
    return PASSES[wire["type"]].settings.model_validate(wire)


def _language_model_passes(spec) -> list[tuple[dict, str]]:
    passes = [({"type": "OnnxGenAI", "name": "genai-auto", "input": "baseline", "precision": "Auto"},
               "ONNX Runtime GenAI, the fastest INT4 … INT8 build within the goal"),
              ({"type": "OpenVinoCausalLM", "name": "openvino-auto", "input": "baseline", "weights": "Auto"},
               "OpenVINO, the fastest INT4 … INT8 weights within the goal")]
    if spec.model.format is ModelFormat.GGUF:
        passes += [({"type": "LlamaCpp", "name": "llama-cpp", "input": "baseline", "quantization": "AsKept"},
                    "llama.cpp on the file as its users run it"),
                   ({"type": "LlamaCpp", "name": "llama-cpp-auto", "input": "baseline", "quantization": "Auto"},
                    "llama.cpp, the fastest of IQ4_XS … Q8_0 within the goal (guided by an importance matrix where "
                    "llama.cpp's tools are installed)")]
    return passes


COMPRESSED, COMPRESSION_BUDGET_SECONDS = "compressed", 1800
_BERT_FAMILY = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
COMPRESSION_STUDY = {"trials": 2, "target": "compressed-quantized", "objectives": ["Latency"], "keepBest": 1,
                     "searchSpace": [{"pass": COMPRESSED, "parameter": "ffnAmount", "choices": [0.25, 0.5]}]}


def _compression(spec, folder: Path) -> list[tuple[dict, str]]:
    """Structured compression of a BERT-family encoder, when the goal and the budget leave room;
    else only the reason, under the key `skip` (plan_for says it and plans nothing for it)."""
    why_not = _compression_left_out(spec, folder)
    if why_not:
        return [({"type": "TransformerCompress", "name": COMPRESSED, "skip": why_not}, "")]
    return [({"type": "TransformerCompress", "name": COMPRESSED, "input": "baseline",
              "training": {"epochs": 6, "learningRate": 2.0e-4, "batchSize": 32}},
             f"structured compression, distilled from the original; a study of {len(COMPRESSION_STUDY['searchSpace'][0]['choices'])}"
             f" trials picks how much to remove, judged after quantization (within spec.budget {spec.budget.duration})"),
            ({"type": "AutoQuantize", "name": "compressed-quantized", "input": COMPRESSED},
             "the compressed encoder quantized in turn: compression and quantization share the goal")]


def _compression_left_out(spec, folder: Path) -> str | None:
    drop = spec.goals.max_accuracy_drop
    if drop is None or drop < 1.0:
        return f"the goal leaves no room for it (goals.maxAccuracyDrop {drop if drop is not None else 'unset'}, under 1 point)"
    if spec.budget is None or spec.budget.seconds() < COMPRESSION_BUDGET_SECONDS:
        return ("spec.budget " + (f"{spec.budget.duration} is" if spec.budget else "is unset:") +
                " under 30m, what distillation and its study take (8 to 27 min for MiniLM on 2 cores)")
    config = folder / spec.model.uri / "config.json"  # an absolute uri stays itself
    if not spec.model.uri.startswith("s3://") and config.is_file():
        kind = json.loads(config.read_text()).get("model_type")
        if kind not in _BERT_FAMILY:
            return f"it takes BERT-family encoders ({', '.join(_BERT_FAMILY)}); this is {kind!r}"
    return None


def _model_passes(spec, folder: Path) -> list[tuple[dict, str]]:
    passes: list[tuple[dict, str]] = []
    source = "baseline"
    if spec.model.format in _ONNX_PRODUCERS:
        passes.append(({"type": "OnnxExport", "name": "onnx-export", "input": "baseline"}, "ONNX, which the runtimes below take"))
        source = "onnx-export"
    elif spec.model.format is not ModelFormat.ONNX:
        return passes  # OpenVINO IR, a TensorRT engine: already built for a runtime
    lacking_bf16 = cpu_lacks("bf16")
    bf16 = ("BF16 offered: " + ", ".join(f for f in ("amx_bf16", "avx512_bf16") if f in cpu_flags())) if not lacking_bf16 \
        else "no BF16 (this CPU does not compute it natively)"
    passes.append(({"type": "AutoQuantize", "name": "auto-quantize", "input": source},
                   f"INT8 on ONNX Runtime and OpenVINO, steered by the goal; {bf16}"))
    if spec.model.format is ModelFormat.HUGGING_FACE and not spec.task.generative:
        passes += _compression(spec, folder)
    if spec.job.device is Device.GPU:
        if spec.model.format in (ModelFormat.TORCH_EXPORT, ModelFormat.HUGGING_FACE):
            passes.append(({"type": "TorchRuntime", "name": "torch-fp16-compiled", "input": "baseline", "device": "GPU",
                            "precision": "FP16", "compile": "MaxAutotune"}, "half precision through torch.compile on the GPU"))
        passes.append(({"type": "OnnxRuntimeGpu", "name": "ort-cuda", "input": source}, "ONNX Runtime on CUDA"))
        passes.append(({"type": "TensorRT", "name": "tensorrt-fp16", "input": source, "precision": "FP16"},
                       "a TensorRT FP16 engine"))
    return passes
