"""INT8 quantization (and BF16 where the CPU computes it natively) steered by the goals
(`AutoQuantize`): the fastest configuration that keeps goals.maxAccuracyDrop, whatever the runtime
(ONNX Runtime and OpenVINO / NNCF side by side), found by
trying the settings that matter and, where none is good enough, keeping the most sensitive operators
in FP32 one at a time.

Every trial is judged on the validation split against the baseline, as the final selection judges
(never on the evaluation split, which stays for the final benchmark), and timed interleaved with
this pass's input, so the speed it reports is a same-run ratio against what it quantized. Every trial lands in the report, whatever its verdict.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import Field, field_validator

from ..modelfile import ModelFile
from .base import OptimizationPass, PassContext, register
from .settings import PassSettings


class QuantizationMethod(str, Enum):
    DYNAMIC = "Dynamic"  # INT8 weights, activations quantized at run time
    STATIC = "Static"  # INT8 weights and activations, ranges calibrated on the calibration split
    BF16 = "BF16"  # OpenVINO computing in BF16, on CPUs that have it natively (AMX, AVX-512 BF16)


class Runtime(str, Enum):
    ONNX_RUNTIME = "OnnxRuntime"
    OPENVINO = "OpenVINO"


class AutoQuantizePass(PassSettings):
    """INT8 quantization steered by the goals: tries the settings that matter (dynamic and static,
    per-channel, reduce-range, activation types, calibration methods, QDQ or operator format; OpenVINO
    in BF16 on CPUs with AMX or AVX-512 BF16), judges
    each on the validation split against this pass's input, and when fidelity falls short keeps the
    most sensitive operators in FP32, one at a time in order of measured sensitivity, until
    goals.maxAccuracyDrop holds or the budget ends. The fastest passing model is the candidate; every
    tried configuration is in the report."""

    type: Literal["AutoQuantize"]
    methods: list[QuantizationMethod] = Field(
        default_factory=lambda: [QuantizationMethod.DYNAMIC, QuantizationMethod.STATIC, QuantizationMethod.BF16],
        min_length=1, max_length=3, description="Which families to search; BF16 (OpenVINO) only on a CPU that computes it "
                                                "natively, else skipped with a note in the report.")
    runtimes: list[Runtime] = Field(default_factory=lambda: [Runtime.ONNX_RUNTIME, Runtime.OPENVINO], min_length=1, max_length=2,
                                    description="Runtimes whose INT8 configurations are searched side by side (OpenVINO: NNCF, "
                                                "static only); one that is not installed is skipped, with a note in the report.")
    max_trials: int = Field(24, ge=1, le=500, description="Quantized models to build and judge, fallback steps included.")
    timeout_seconds: int = Field(900, ge=10, le=86_400, description="Stop starting new trials after this long.")
    validation_split: str = Field("calibration", min_length=1, description="Split each trial is judged on (never the evaluation split).")
    validation_samples: int = Field(256, ge=8, le=100_000, description="Rows of the validation split used to judge a trial.")
    calibration_samples: int = Field(128, ge=1, le=100_000, description="Rows that calibrate static quantization.")
    max_fallback_nodes: int = Field(24, ge=0, le=10_000, description="Most operators kept in FP32 before the search gives up.")

    def judging_splits(self) -> tuple[str, ...]:
        return (self.validation_split,)

    @field_validator("methods", "runtimes")
    @classmethod
    def _unique(cls, values: list) -> list:
        if len(set(values)) != len(values):
            raise ValueError("must be unique")
        return values


_MATMULS = ["MatMul", "Gemm"]
# The settings that matter, fastest-first within each family: what a person would try by hand.
DYNAMIC_SETTINGS = [
    {"perChannel": False, "reduceRange": False},
    {"perChannel": True, "reduceRange": False},
    {"perChannel": True, "reduceRange": True},
    {"perChannel": False, "reduceRange": True},
]
# NNCF's presets: its transformer model type keeps the sensitive parts of attention in FP32.
OPENVINO_SETTINGS = [
    {"modelType": "Transformer", "preset": "Mixed"},
    {"modelType": "Default", "preset": "Performance"},
]
STATIC_SETTINGS = [
    {"quantFormat": "QDQ", "perChannel": True, "activationType": "QUInt8", "calibrationMethod": "MinMax", "opTypes": _MATMULS},
    {"quantFormat": "QDQ", "perChannel": True, "activationType": "QUInt8", "calibrationMethod": "Percentile", "opTypes": _MATMULS},
    {"quantFormat": "QDQ", "perChannel": True, "activationType": "QUInt8", "calibrationMethod": "MinMax", "opTypes": None},
    {"quantFormat": "QOperator", "perChannel": True, "activationType": "QUInt8", "calibrationMethod": "MinMax", "opTypes": _MATMULS},
    {"quantFormat": "QDQ", "perChannel": True, "activationType": "QInt8", "calibrationMethod": "Entropy", "opTypes": _MATMULS},
]


ORT, OPENVINO = Runtime.ONNX_RUNTIME.value, Runtime.OPENVINO.value


@register(AutoQuantizePass)
class AutoQuantize(OptimizationPass):
    technique = "quantization"

    def check(self, spec) -> str | None:
        if self.spec.validation_split == spec.data.evaluation_split:
            return ("validationSplit: must differ from spec.data.evaluationSplit, or the final figures would be "
                    "measured on the data the search was steered by")
        return None

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        from .quantize_search import SteeredSearch

        search = SteeredSearch(self.spec, model, ctx)
        try:
            chosen = search.run()
        finally:
            self.details = search.report()
        return chosen

    @classmethod
    def report_section(cls, name: str, search: dict[str, Any]) -> list[str]:
        """report.md's account of the search: every configuration tried, as report() wrote it."""
        from ..units import goal_text, human_size

        goal = search["goal"]
        limit = goal_text(goal)
        lines = [f"## Steered quantization `{name}`", "",
                 f"{len(search['trials'])} configuration(s) judged on {search['validationRows']} rows of "
                 f"`{search['validationSplit']}` against the baseline ({goal['metric']}, goal: {limit}), timed at batch "
                 f"{search['batchSize']} interleaved with the pass's input; {search['seconds']} s; stopped: {search['stoppedBecause']}. "
                 f"Chosen: trial {search['chosenTrial']}.", "",
                 "| trial | runtime | method | settings | FP32 nodes | metric | drop | × input | size | verdict |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for t in search["trials"]:
            settings = ", ".join(f"{k}={'/'.join(v) if isinstance(v, list) else ('all' if v is None else v)}"
                                 for k, v in t["settings"].items())
            measured = t["drop"] is not None
            lines.append(f"| {t['number']}{' (chosen)' if t['number'] == search['chosenTrial'] else ''} | {t.get('runtime', '')} | {t['method']} | {settings} | "
                         f"{len(t['fallbackNodes'])} | {t['metric']:.4f} | {t['drop']:+.3f} | {t['speedupVsInput']:.2f}× | "
                         f"{human_size(t['sizeBytes'])} | {t['verdict']} |" if measured else
                         f"| {t['number']} | {t.get('runtime', '')} | {t['method']} | {settings} | {len(t['fallbackNodes'])} | – | – | – | – | {t['verdict']} |")
        lines += [""] + [f"Note: {note}." for note in search.get("notes", [])] if search.get("notes") else []
        if search["sensitivity"]:
            lines += ["", "Most error-adding nodes (relative L2 error added at the node's output): "
                      + ", ".join(f"`{e['node']}` {e['addedError']:.3f}" for e in search["sensitivity"][:8]) + "."]
        return lines + [""]
