"""A causal language model for OpenVINO: exported once by optimum-intel as a stateful FP32 IR (the
key/value cache inside the model), then its weights compressed by NNCF (INT8, or INT4 in groups,
optionally only a share of the layers and with the data-aware AWQ, scale estimation or GPTQ on the
calibration text), the key/value cache in the precision asked. `weights: Auto` searches those from
the fastest kind to the safest, judged on the calibration text against the goal (llm/search.py)."""

from __future__ import annotations

import shutil
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ..errors import PassError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import PassContext, failing_as, register
from .quantize import quiet_library
from .settings import PassSettings
from .steered import SteeredBuildPass


class OvWeights(str, Enum):
    AUTO = "Auto"  # the fastest of INT4 / mixed / INT8 that keeps goals.maxAccuracyDrop (llm/search.py)
    FP32 = "Fp32"  # the exported model as it is: OpenVINO's runtime, the same weights
    INT8 = "Int8"  # weight-only, a scale per output channel
    INT4 = "Int4"  # weight-only, a scale per group of weights; `ratio` of the layers, the rest INT8


class KvCachePrecision(str, Enum):
    DEFAULT = "Default"  # what OpenVINO chooses for the CPU (f16 with OpenVINO 2026)
    U8 = "U8"
    F16 = "F16"
    F32 = "F32"


class OpenVinoCausalLMPass(PassSettings):
    """A causal LM exported to OpenVINO by optimum-intel (stateful IR) with NNCF weight compression."""

    type: Literal["OpenVinoCausalLM"]
    weights: OvWeights = OvWeights.INT8
    symmetric: bool = True
    group_size: int = Field(64, ge=8, le=4096, description="Int4: weights per scale; must divide every compressed "
                            "layer's input width.")
    ratio: float = Field(1.0, gt=0, le=1, description="Int4: share of the layers in INT4, the rest INT8; the layers "
                         "are chosen by their sensitivity on the calibration text.")
    awq: bool = Field(False, description="Int4: activation-aware scales (AWQ) from the calibration text.")
    scale_estimation: bool = Field(False, description="Int4: scales fitted to the calibration text's activations.")
    gptq: bool = Field(False, description="Int4: GPTQ on the calibration text.")
    calibration_windows: int = Field(16, ge=1, le=4096, description="Windows of the calibration text the data-aware "
                                     "options (ratio < 1, awq, scaleEstimation, gptq) read.")
    kv_cache_precision: KvCachePrecision = KvCachePrecision.DEFAULT
    judge_tokens: int | None = Field(None, ge=8, le=1_000_000, description="Auto: tokens of the calibration text "
                                     "each build is judged on (defaults to task.evaluationTokens).")

    @model_validator(mode="after")
    def _int4_options(self) -> "OpenVinoCausalLMPass":
        if self.weights in (OvWeights.FP32, OvWeights.INT8):
            set_options = [name for name in ("awq", "scale_estimation", "gptq") if getattr(self, name)]
            if set_options or self.ratio < 1:
                raise ValueError(f"weights {self.weights.value}: ratio and the data-aware options (awq, scaleEstimation, "
                                 "gptq) apply to weights Int4 only")
        return self

    @property
    def data_aware(self) -> bool:
        return self.weights is OvWeights.INT4 and (self.ratio < 1 or self.awq or self.scale_estimation or self.gptq)

    def nncf_arguments(self) -> dict[str, Any]:
        """nncf.compress_weights' keyword arguments for these settings (model and dataset apart)."""
        import nncf

        modes = {(OvWeights.INT8, True): "INT8_SYM", (OvWeights.INT8, False): "INT8_ASYM",
                 (OvWeights.INT4, True): "INT4_SYM", (OvWeights.INT4, False): "INT4_ASYM"}
        arguments: dict[str, Any] = {"mode": getattr(nncf.CompressWeightsMode, modes[self.weights, self.symmetric])}
        if self.weights is OvWeights.INT4:
            arguments |= {"group_size": self.group_size, "ratio": self.ratio, "awq": self.awq,
                          "scale_estimation": self.scale_estimation, "gptq": self.gptq}
        return arguments

    @property
    def trial_label(self) -> str:
        label = self.weights.value
        if self.weights in (OvWeights.INT8, OvWeights.INT4):
            label += " symmetric" if self.symmetric else " asymmetric"
        if self.weights is OvWeights.INT4:
            label += f" group {self.group_size}" + (f", {self.ratio:.0%} of layers (rest Int8)" if self.ratio < 1 else "")
            label += "".join(f", {name}" for name, on in (("AWQ", self.awq), ("scale estimation", self.scale_estimation),
                                                           ("GPTQ", self.gptq)) if on)
        if self.kv_cache_precision is not KvCachePrecision.DEFAULT:
            label += f", cache {self.kv_cache_precision.value}"
        return label

    def ladder(self) -> list["OpenVinoCausalLMPass"]:
        """weights Auto: the builds tried, the fastest kind first (as the issue's hand search went);
        symmetry, group size, cache precision and the judge as given."""
        steps = [dict(weights=OvWeights.INT4),
                 dict(weights=OvWeights.INT4, ratio=0.8, awq=True, scale_estimation=True),
                 dict(weights=OvWeights.INT4, ratio=0.5),
                 dict(weights=OvWeights.INT8)]
        return [self.model_copy(update=step) for step in steps]

    @property
    def precision_label(self) -> str:
        if self.weights is OvWeights.INT4 and self.ratio < 1:
            return "int4/int8"
        return self.weights.value.lower()


@register(OpenVinoCausalLMPass)
class OpenVinoCausalLM(SteeredBuildPass):
    output_format = ModelFormat.OPENVINO_CAUSAL_LM

    def not_applicable_reason(self) -> str | None:
        import importlib.util

        from ..llm.openvino_export import exporter_missing

        missing = [name for name in ("openvino", "nncf") if importlib.util.find_spec(name) is None]
        return f"{' and '.join(missing)} not installed in this image" if missing else exporter_missing()

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        from ..llm.loading import check_round_trip, checkpoint_input

        source, tokenizer, sample = checkpoint_input(model, ctx)
        fp32 = self._exported(source, ctx)

        def build(settings: OpenVinoCausalLMPass, output: Path) -> None:
            ctx.log(f"building {settings.trial_label}")
            self._build(settings, fp32, source, output, ctx)
            with failing_as("the built model's tokenizer check"):
                check_round_trip(tokenizer, output, sample)

        settings = self.build_steered(model, source, ctx, build, self.spec.weights is OvWeights.AUTO)
        return ModelFile(ctx.output_dir, ModelFormat.OPENVINO_CAUSAL_LM, settings.precision_label, generative=True)

    @staticmethod
    def _exported(source: Path, ctx: PassContext) -> Path:
        """The source as a stateful FP32 IR, exported once per run into its scratch (every
        OpenVinoCausalLM pass of the run starts from it); returns the .xml."""
        from ..llm.openvino_export import export
        from ..runtimes.openvino_causal_lm import XML

        folder = ctx.output_dir.parent / f"_{source.name}-openvino"
        if not (folder / XML).is_file():
            ctx.log("exporting the model to OpenVINO (optimum-intel, stateful)")
            shutil.rmtree(folder, ignore_errors=True)  # an export cut short leaves no half model behind
            export(source, folder)
        return folder / XML

    @staticmethod
    def _build(settings: OpenVinoCausalLMPass, fp32: Path, source: Path, output: Path, ctx: PassContext) -> None:
        import openvino as ov

        from ..runtimes.openvino_causal_lm import XML

        ir = ov.Core().read_model(str(fp32))
        if settings.weights is not OvWeights.FP32:
            import nncf

            dataset = nncf.Dataset(_calibration_feeds(ctx, settings.calibration_windows)) if settings.data_aware else None
            with quiet_library("nncf"):
                try:
                    ir = nncf.compress_weights(ir, dataset=dataset, **settings.nncf_arguments())
                except Exception as exc:  # nncf.ValidationError: a group size that does not divide a layer, …
                    raise PassError(f"NNCF weight compression failed: {' '.join(str(exc).split())[:400]}") from None
        if settings.kv_cache_precision is not KvCachePrecision.DEFAULT:
            # read by OpenVINO when it compiles the model: the artifact carries how it is to be run
            ir.set_rt_info(settings.kv_cache_precision.value.lower(), ["runtime_options", "KV_CACHE_PRECISION"])
        output.mkdir(parents=True, exist_ok=True)
        ov.save_model(ir, str(output / XML), compress_to_fp16=False)
        for path in source.iterdir():  # configuration and the checked tokenizer; the weights are in the IR
            if path.is_file() and path.suffix not in (".safetensors", ".bin") and not path.name.endswith(".index.json"):
                shutil.copy2(path, output / path.name)


def _calibration_feeds(ctx: PassContext, windows: int) -> list[dict]:
    """The stateful model's inputs for whole windows of the calibration text (an empty cache each)."""
    from ..runtimes.openvino_causal_lm import stateful_feed

    split = ctx.dataset.splits.get(ctx.dataset.source.calibration_split)
    if split is None:
        raise PassError(f"the data-aware options read the text after task.evaluationTokens (split "
                        f"{ctx.dataset.source.calibration_split!r}); the text has not one more window there")
    return [stateful_feed(row[None, :].astype("int64")) for row in split.take(windows).inputs["input_ids"]]
