"""A plan for a spec that writes no passes: chosen from the model's format and task and from the
machine the Job landed on. Each pass the plan considers is asked whether it applies here (its own
not_applicable_reason: a missing package, no GPU, a CPU without native BF16), so the plan and the
passes never disagree; what was left out is said, with the reason, in the report.

- a causal language model: the steered builds of every language-model runtime installed (ONNX
  Runtime GenAI, OpenVINO, and llama.cpp for a GGUF file, also as kept);
- anything else: ONNX export where the model is not ONNX, then AutoQuantize (INT8 on ONNX Runtime
  and OpenVINO side by side, BF16 where the CPU computes it); on a GPU Job, FP16 in PyTorch through
  torch.compile, ONNX Runtime on CUDA, and TensorRT where it is installed.

A hand-written pass list always wins: the plan is made only when `spec.passes` is empty."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..measurement.hardware import cpu_flags, cpu_lacks
from ..passes import PASSES, build_pass
from ..spec.schema import ModelOptimization
from ..spec.sources import Device, ModelFormat

_ONNX_PRODUCERS = frozenset({ModelFormat.TORCH_SCRIPT, ModelFormat.TORCH_EXPORT, ModelFormat.HUGGING_FACE})


@dataclass
class Plan:
    passes: list[dict]  # as a user would write them
    reasons: list[str] = field(default_factory=list)  # why each was planned or left out
    automatic: bool = True

    def to_wire(self) -> dict:
        return {"automatic": self.automatic, "passes": self.passes, "reasons": self.reasons}


def plan_for(resource: ModelOptimization) -> Plan:
    """The passes to run: the spec's own, or a plan for this machine."""
    spec = resource.spec
    if spec.passes:
        return Plan([p.to_wire() for p in spec.passes], ["written in spec.passes"], automatic=False)
    considered = _language_model_passes(spec) if spec.task.generative else _model_passes(spec)
    plan = Plan([])
    for settings, why in considered:
        reason = build_pass(_settings(settings)).not_applicable_reason()
        if reason:
            plan.reasons.append(f"{settings['name']} ({settings['type']}) left out: {reason}")
        else:
            plan.passes.append(settings)
            plan.reasons.append(f"{settings['name']} ({settings['type']}): {why}")
    if not plan.passes:
        plan.reasons.append("nothing applies here: the run measures the baseline alone")
    return plan


def planned(resource: ModelOptimization) -> tuple[ModelOptimization, Plan]:
    """The resource with its plan written into spec.passes (the report then lists the spec that ran)."""
    plan = plan_for(resource)
    if not plan.automatic:
        return resource, plan
    spec = resource.spec.model_copy(update={"passes": [_settings(p) for p in plan.passes]})
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
                    "llama.cpp, the fastest of Q4_K_M … Q8_0 within the goal")]
    return passes


def _model_passes(spec) -> list[tuple[dict, str]]:
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
    if spec.job.device is Device.GPU:
        if spec.model.format in (ModelFormat.TORCH_EXPORT, ModelFormat.HUGGING_FACE):
            passes.append(({"type": "TorchRuntime", "name": "torch-fp16-compiled", "input": "baseline", "device": "GPU",
                            "precision": "FP16", "compile": "MaxAutotune"}, "half precision through torch.compile on the GPU"))
        passes.append(({"type": "OnnxRuntimeGpu", "name": "ort-cuda", "input": source}, "ONNX Runtime on CUDA"))
        passes.append(({"type": "TensorRT", "name": "tensorrt-fp16", "input": source, "precision": "FP16"},
                       "a TensorRT FP16 engine"))
    return passes
