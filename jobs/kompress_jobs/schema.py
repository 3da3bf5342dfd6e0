"""The ModelOptimization resource (kompress.io/v1alpha1) as pydantic models.

This module is the single source of truth for the resource: the CLI validates YAML with it,
the Job reads its spec with it, the operator writes status with it, and crds/ is generated
from it. Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
Enumerated values are CamelCase, as the Kubernetes API conventions ask.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

API_GROUP = "kompress.io"
API_VERSION = "v1alpha1"
KIND = "ModelOptimization"
PLURAL = "modeloptimizations"
MAX_STRING = 4096  # an S3 key is at most 1024 bytes; a URI, a pattern or a name fits well within
MAX_ITEMS = 1024  # the longest lists: operator names of a large graph to leave alone


class Model(BaseModel):
    """Base for every object in the resource: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        # Every string is bounded (fields may set a smaller or, with a reason, larger limit), and so
        # is every list and map (max_length on the field): one tenant's spec cannot grow the
        # operator without bound (tests/test_crd.py checks the generated CRD for it).
        str_max_length=MAX_STRING,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in YAML / the API server (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- what to optimize --------------------------------------------------------------------


class ModelFormat(str, Enum):
    ONNX = "ONNX"
    TORCH_SCRIPT = "TorchScript"  # torch.jit.save archive
    TORCH_EXPORT = "TorchExport"  # torch.export.save program (.pt2)
    TENSORRT = "TensorRT"  # serialized engine; runs only on the GPU model and TensorRT version that built it
    HUGGING_FACE = "HuggingFace"  # a checkpoint directory: config.json, *.safetensors, tokenizer files
    OPENVINO = "OpenVINO"  # IR: model.xml, with its weights in model.bin beside it


class HeadType(str, Enum):
    AUTO = "Auto"  # from the checkpoint's config.json `architectures`
    FEATURE_EXTRACTION = "FeatureExtraction"  # pooled embeddings
    SEQUENCE_CLASSIFICATION = "SequenceClassification"
    TOKEN_CLASSIFICATION = "TokenClassification"


class Pooling(str, Enum):
    MEAN = "Mean"  # average of the token states under the attention mask (sentence-transformers' default)
    CLS = "Cls"  # the first token's state


class HuggingFaceOptions(Model):
    """How a Hugging Face checkpoint becomes a model with named inputs and one task output."""

    head: HeadType = Field(HeadType.AUTO, description="Task head; Auto reads `architectures` in config.json "
                           "(…ForSequenceClassification, …ForTokenClassification, otherwise FeatureExtraction).")
    pooling: Pooling = Field(Pooling.MEAN, description="FeatureExtraction only: how token states become one embedding.")
    normalize: bool = Field(False, description="FeatureExtraction only: L2-normalize the embedding.")


class ModelSource(Model):
    uri: str = Field(min_length=1, description="Path or s3:// URI of the model file (a directory for HuggingFace).")
    format: ModelFormat = Field(description="How the model was saved. Pickled modules are never loaded.")
    hugging_face: HuggingFaceOptions | None = Field(None, description="HuggingFace format only; defaults apply when unset.")

    @model_validator(mode="after")
    def _options_fit_format(self) -> "ModelSource":
        if self.hugging_face is not None and self.format is not ModelFormat.HUGGING_FACE:
            raise ValueError(f"huggingFace options need format: HuggingFace, not {self.format.value}")
        return self


class TextData(Model):
    """Rows of text (JSONL, CSV or Parquet), tokenized with the checkpoint's tokenizer."""

    column: str = Field("text", min_length=1, description="Column holding the text.")
    pair_column: str | None = Field(None, min_length=1, description="Second text of a pair (rerankers, NLI).")
    label_column: str | None = Field(None, min_length=1, description="Integer class labels or numbers; none for label-free tasks.")
    split_column: str = Field("split", min_length=1, description="Column naming each row's split (train, calibration, evaluation, ...).")
    max_length: int = Field(128, ge=1, le=8192, description="Tokens per row: longer rows are cut, shorter ones padded.")
    tokenizer: str | None = Field(None, min_length=1, description="Tokenizer directory (path or s3://); "
                                  "defaults to the model's checkpoint directory.")


class DataSource(Model):
    uri: str = Field(
        min_length=1,
        description="Path or s3:// URI of an .npz (x_<split> or x_<split>/<input name> arrays, y_<split> labels "
                    "optional), or of a .jsonl / .csv / .parquet text file (with `text`).",
    )
    text: TextData | None = Field(None, description="Read the file as text rows and tokenize them.")
    train_split: str = Field("train", min_length=1, description="Split used to fine-tune.")
    calibration_split: str = Field("calibration", min_length=1, description="Split used to calibrate static quantization.")
    evaluation_split: str = Field("evaluation", min_length=1, description="Split used to measure the metric and latency.")


class TaskType(str, Enum):
    CLASSIFICATION = "Classification"
    REGRESSION = "Regression"
    FIDELITY = "Fidelity"  # no labels: every candidate is scored against the baseline's own outputs


class Metric(str, Enum):
    ACCURACY = "Accuracy"  # higher is better, a fraction in [0, 1]
    MEAN_SQUARED_ERROR = "MeanSquaredError"  # lower is better
    MEAN_ABSOLUTE_ERROR = "MeanAbsoluteError"  # lower is better
    # Fidelity to the baseline's outputs (no labels needed):
    COSINE_SIMILARITY = "CosineSimilarity"  # mean per-sample cosine; embeddings
    TOP1_AGREEMENT = "Top1Agreement"  # share of samples whose arg-max class matches; classifiers
    TOPK_AGREEMENT = "TopKAgreement"  # share of the baseline's top-k classes also in the candidate's top-k
    KL_DIVERGENCE = "KlDivergence"  # mean KL(baseline ‖ candidate) of the softmax; logits
    RELATIVE_ERROR = "RelativeError"  # ‖candidate − baseline‖ / ‖baseline‖ over the split

    @property
    def higher_is_better(self) -> bool:
        return self in _FRACTION_METRICS

    @property
    def is_fraction(self) -> bool:
        """A share in [0, 1]: drops are counted in percentage points in Absolute mode."""
        return self in _FRACTION_METRICS

    @property
    def is_fidelity(self) -> bool:
        return self in _FIDELITY_METRICS


_FRACTION_METRICS = frozenset({Metric.ACCURACY, Metric.COSINE_SIMILARITY, Metric.TOP1_AGREEMENT, Metric.TOPK_AGREEMENT})
_FIDELITY_METRICS = frozenset({Metric.COSINE_SIMILARITY, Metric.TOP1_AGREEMENT, Metric.TOPK_AGREEMENT,
                               Metric.KL_DIVERGENCE, Metric.RELATIVE_ERROR})
_TASK_METRICS = {
    "Classification": (Metric.ACCURACY, {Metric.ACCURACY}),
    "Regression": (Metric.MEAN_SQUARED_ERROR, {Metric.MEAN_SQUARED_ERROR, Metric.MEAN_ABSOLUTE_ERROR}),
    "Fidelity": (Metric.COSINE_SIMILARITY, set(_FIDELITY_METRICS)),
}


class Task(Model):
    type: TaskType = TaskType.CLASSIFICATION
    metric: Metric | None = Field(None, description="Defaults to Accuracy (Classification), MeanSquaredError "
                                  "(Regression) or CosineSimilarity (Fidelity).")
    output: str | None = Field(None, min_length=1, description="The model output that is scored (default: the first).")
    top_k: int = Field(5, ge=1, le=1000, description="k of TopKAgreement.")

    @model_validator(mode="after")
    def _metric_fits_task(self) -> "Task":
        default, allowed = _TASK_METRICS[self.type.value]
        if self.metric is None:
            self.metric = default
        elif self.metric not in allowed:
            raise ValueError(f"metric {self.metric.value} does not fit a {self.type.value} task "
                             f"(it takes {', '.join(sorted(m.value for m in allowed))})")
        return self

    @property
    def needs_labels(self) -> bool:
        return self.type is not TaskType.FIDELITY


# --- passes ------------------------------------------------------------------------------


class PassBase(Model):
    name: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="Unique name of the candidate this pass produces (defaults to the pass type).",
    )
    input: str | None = Field(
        None,
        description="Name of the earlier pass (or 'baseline') whose model this pass takes. "
        "Defaults to the newest model of the chain (see docs/passes.md).",
    )


class Exporter(str, Enum):
    AUTO = "Auto"
    TORCH_SCRIPT = "TorchScript"
    DYNAMO = "Dynamo"


class OnnxExportPass(PassBase):
    type: Literal["OnnxExport"]
    opset: int = Field(17, ge=13, le=23)
    exporter: Exporter = Field(Exporter.AUTO, description="Auto: TorchScript archives use the TorchScript exporter, torch.export programs the Dynamo one.")


class OptimizationLevel(str, Enum):
    BASIC = "Basic"
    EXTENDED = "Extended"
    ALL = "All"


class OrtOptimizePass(PassBase):
    type: Literal["OrtOptimize"]
    level: OptimizationLevel = OptimizationLevel.EXTENDED


class QuantType(str, Enum):
    QINT8 = "QInt8"
    QUINT8 = "QUInt8"


class DynamicInt8Pass(PassBase):
    type: Literal["DynamicInt8"]
    per_channel: bool = False
    reduce_range: bool = Field(False, description="7-bit weights, for CPUs without VNNI.")
    weight_type: QuantType = QuantType.QINT8
    op_types: list[str] | None = Field(None, max_length=256, description="Operator types to quantize; all supported when unset.")


class CalibrationMethod(str, Enum):
    MIN_MAX = "MinMax"
    ENTROPY = "Entropy"
    PERCENTILE = "Percentile"


class QuantFormat(str, Enum):
    QDQ = "QDQ"
    QOPERATOR = "QOperator"


class StaticInt8Pass(PassBase):
    type: Literal["StaticInt8"]
    per_channel: bool = True
    reduce_range: bool = False
    quant_format: QuantFormat = QuantFormat.QDQ
    calibration_method: CalibrationMethod = CalibrationMethod.MIN_MAX
    calibration_samples: int = Field(256, ge=1, le=100_000)
    activation_type: QuantType = QuantType.QUINT8
    weight_type: QuantType = QuantType.QINT8
    op_types: list[str] | None = Field(None, max_length=256)


class Fp16Pass(PassBase):
    type: Literal["Fp16"]
    keep_io_types: bool = Field(True, description="Keep FP32 inputs and outputs so callers need not change.")


class TensorRtPrecision(str, Enum):
    FP16 = "FP16"
    INT8 = "INT8"


class TensorRtPass(PassBase):
    """A TensorRT engine built from the ONNX model on the Job's GPU, benchmarked there like every
    other candidate. Without a GPU or TensorRT the pass is reported NotApplicable with the reason."""

    type: Literal["TensorRT"]
    precision: TensorRtPrecision = Field(TensorRtPrecision.FP16, description="FP16, or INT8 calibrated on the "
                                         "calibration split (FP16 kernels where INT8 has none). A QDQ model keeps its own scales.")
    workspace_mi_b: int = Field(1024, ge=16, le=1_048_576, alias="workspaceMiB", description="Builder scratch memory.")
    calibration_batch_size: int = Field(32, ge=1, le=4096)


class QuantizationMethod(str, Enum):
    DYNAMIC = "Dynamic"  # INT8 weights, activations quantized at run time
    STATIC = "Static"  # INT8 weights and activations, ranges calibrated on the calibration split


class Runtime(str, Enum):
    ONNX_RUNTIME = "OnnxRuntime"
    OPENVINO = "OpenVINO"


class AutoQuantizePass(PassBase):
    """INT8 quantization steered by the goals: tries the settings that matter (dynamic and static,
    per-channel, reduce-range, activation types, calibration methods, QDQ or operator format), judges
    each on the validation split against this pass's input, and when fidelity falls short keeps the
    most sensitive operators in FP32, one at a time in order of measured sensitivity, until
    goals.maxAccuracyDrop holds or the budget ends. The fastest passing model is the candidate; every
    tried configuration is in the report."""

    type: Literal["AutoQuantize"]
    methods: list[QuantizationMethod] = Field(default_factory=lambda: [QuantizationMethod.DYNAMIC, QuantizationMethod.STATIC],
                                              min_length=1, max_length=2, description="Which families to search.")
    runtimes: list[Runtime] = Field(default_factory=lambda: [Runtime.ONNX_RUNTIME, Runtime.OPENVINO], min_length=1, max_length=2,
                                    description="Runtimes whose INT8 configurations are searched side by side (OpenVINO: NNCF, "
                                                "static only); one that is not installed is skipped, with a note in the report.")
    max_trials: int = Field(24, ge=1, le=500, description="Quantized models to build and judge, fallback steps included.")
    timeout_seconds: int = Field(900, ge=10, le=86_400, description="Stop starting new trials after this long.")
    validation_split: str = Field("calibration", min_length=1, description="Split each trial is judged on (never the evaluation split).")
    validation_samples: int = Field(256, ge=8, le=100_000, description="Rows of the validation split used to judge a trial.")
    calibration_samples: int = Field(128, ge=1, le=100_000, description="Rows that calibrate static quantization.")
    max_fallback_nodes: int = Field(24, ge=0, le=10_000, description="Most operators kept in FP32 before the search gives up.")

    @field_validator("methods", "runtimes")
    @classmethod
    def _unique(cls, values: list) -> list:
        if len(set(values)) != len(values):
            raise ValueError("must be unique")
        return values


class OpenVinoConvertPass(PassBase):
    """The ONNX model converted to OpenVINO IR (model.xml + model.bin) and run by OpenVINO on the CPU
    (inference precision f32, latency hint, benchmark.threads threads)."""

    type: Literal["OpenVinoConvert"]


class NncfModelType(str, Enum):
    DEFAULT = "Default"
    TRANSFORMER = "Transformer"  # NNCF's transformer preset: keeps the sensitive parts of attention blocks in FP32


class NncfPreset(str, Enum):
    PERFORMANCE = "Performance"  # symmetric weights and activations
    MIXED = "Mixed"  # symmetric weights, asymmetric activations (NNCF's default for transformers)


class IgnoredScope(Model):
    """Operators NNCF leaves in FP32, by OpenVINO name, name pattern (regex) or type; each must match one."""

    names: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    patterns: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    types: list[str] = Field(default_factory=list, max_length=256)


class OpenVinoInt8Pass(PassBase):
    """INT8 post-training quantization of weights and activations with NNCF, calibrated on the
    calibration split; the result is an OpenVINO IR."""

    type: Literal["OpenVinoInt8"]
    model_type: NncfModelType = NncfModelType.DEFAULT
    preset: NncfPreset | None = Field(None, description="NNCF's choice for the model type when unset.")
    calibration_samples: int = Field(300, ge=1, le=100_000)
    fast_bias_correction: bool = True
    ignored_scope: IgnoredScope = Field(default_factory=IgnoredScope)


class WeightBits(str, Enum):
    INT8 = "INT8"
    INT4 = "INT4"


class OpenVinoWeightCompressionPass(PassBase):
    """Weight-only compression with NNCF (MatMul / embedding weights to INT8 or INT4, activations stay
    FP32): mostly a size gain on CPU encoders; the benchmark says whether it is also faster."""

    type: Literal["OpenVinoWeightCompression"]
    bits: WeightBits = WeightBits.INT4
    symmetric: bool = True
    block_size: int | None = Field(128, ge=8, le=4096, description="INT4: weights per scale (group size); must divide every compressed layer's input width.")
    ratio: float = Field(1.0, gt=0, le=1, description="INT4: share of the layers in INT4; the rest INT8.")


class Int4WeightOnlyPass(PassBase):
    """ONNX Runtime's INT4 weight-only quantization of MatMul weights (MatMulNBits, block-wise scales)."""

    type: Literal["Int4WeightOnly"]
    block_size: int = Field(32, ge=16, le=1024, description="Weights per scale, a power of two that divides every MatMul's input width.")
    symmetric: bool = True
    accuracy_level: int | None = Field(None, ge=0, le=4, description="ONNX Runtime's compute type for the activations (4: INT8, fastest on CPU).")

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, size: int) -> int:
        if size & (size - 1):
            raise ValueError(f"must be a power of two, not {size}")
        return size


class FineTuning(Model):
    """Training on the data's train split (classification: cross-entropy; regression: MSE)."""

    epochs: int = Field(3, ge=0, le=1000, description="Passes over the train split; 0 skips training.")
    learning_rate: float = Field(1e-3, gt=0, le=1)
    batch_size: int = Field(64, ge=1, le=65536)
    seed: int = Field(0, ge=0)


class PrunePass(PassBase):
    """Unstructured magnitude pruning: the smallest weights of Linear and Conv layers (ranked across
    all of them) become zeros, kept at zero while fine-tuning recovers accuracy. Dense kernels do not
    run faster on zeros; the candidate is smaller only compressed (the report says so)."""

    type: Literal["Prune"]
    amount: float = Field(0.5, gt=0, lt=1, description="Fraction of the weights to remove, in (0, 1).")
    fine_tuning: FineTuning = Field(default_factory=FineTuning)


class Importance(str, Enum):
    L1 = "L1"
    L2 = "L2"


class Distillation(Model):
    """Learn from the input model's softened outputs as well as from the labels."""

    temperature: float = Field(4.0, gt=0, le=100, description="Softens both distributions in the KL term.")
    alpha: float = Field(0.7, ge=0, le=1, description="Weight of the teacher term; 1 - alpha goes to the labels.")


class StructuredPrunePass(PassBase):
    """Structured pruning: whole channels of convolutions and neurons of Linear layers are removed
    (with everything coupled to them, found by Torch-Pruning's dependency graph), so the network is
    physically narrower, smaller and faster; then fine-tuned on the train split. The output layer
    keeps its width."""

    type: Literal["StructuredPrune"]
    architecture: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
        description="module:callable in the Job image that builds the input model as an eager torch.nn.Module "
                    "(a TorchScript archive holds weights and compiled code, not a module that can be narrowed). "
                    "The input's weights are loaded into it; code never comes from the model file.")
    architecture_args: dict[str, int] = Field(default_factory=dict, max_length=64, description="Keyword arguments for the callable.")
    amount: float = Field(0.5, gt=0, lt=1, description="Fraction of the channels / neurons of each prunable layer to remove, in (0, 1).")
    importance: Importance = Field(Importance.L2, description="Norm of a channel's weights (over all coupled layers) that ranks it.")
    global_ranking: bool = Field(False, description="Rank channels across layers instead of cutting each layer by `amount`.")
    round_to: int | None = Field(None, ge=1, le=1024, description="Keep channel counts a multiple of this (8 suits SIMD and tensor cores).")
    ignored_layers: list[str] = Field(default_factory=list, max_length=MAX_ITEMS, description="Names of modules to keep whole (the output layer always is).")
    fine_tuning: FineTuning = Field(default_factory=lambda: FineTuning(epochs=5))
    distillation: Distillation | None = Field(None, description="Fine-tune against the unpruned model's outputs as well (a student derived from the teacher).")


class TransformerCompressPass(PassBase):
    """Structured compression of a Hugging Face encoder (BERT family): removes attention heads and
    feed-forward neurons by measured importance (their contribution to the residual stream on the
    train split), optionally keeps fewer layers, then recovers by distillation from the uncompressed
    model on the train split (label-free tasks match its outputs; no labels needed). The smaller
    encoder is written as ONNX FP32, ready to quantize."""

    type: Literal["TransformerCompress"]
    head_amount: float = Field(0.0, ge=0, lt=1, description="Share of each layer's attention heads to remove.")
    ffn_amount: float = Field(0.5, ge=0, lt=1, description="Share of each layer's feed-forward neurons to remove.")
    keep_layers: int | None = Field(None, ge=1, le=1000, description="Layers to keep, evenly spaced from the first to the last (default: all).")
    importance_samples: int = Field(64, ge=1, le=100_000, description="Train rows the importance is measured on.")
    distillation: Distillation = Field(default_factory=Distillation, description="Classification: KL to the teacher's logits with "
                                       "this temperature and alpha; label-free tasks match the teacher's outputs only.")
    hidden_state_weight: float = Field(1.0, ge=0, le=100, description="Weight of matching each kept layer's hidden states to "
                                       "those of the teacher layer it stands for (0: the outputs only).")
    training: FineTuning = Field(default_factory=lambda: FineTuning(epochs=4, learning_rate=1e-4, batch_size=32))
    opset: int = Field(17, ge=13, le=23)


class DistillPass(PassBase):
    """Train a smaller student on the teacher's (the input model's) softened outputs and the labels."""

    type: Literal["Distill"]
    student: ModelSource = Field(description="A TorchScript archive with the teacher's input and output shapes "
                                             "(its weights are the starting point).")
    temperature: float = Field(4.0, gt=0, le=100, description="Softens both distributions in the KL term.")
    alpha: float = Field(0.7, ge=0, le=1, description="Weight of the teacher term; 1 - alpha goes to the labels.")
    training: FineTuning = Field(default_factory=lambda: FineTuning(epochs=30, learning_rate=2e-3))

    @field_validator("student")
    @classmethod
    def _trainable_student(cls, student: ModelSource) -> ModelSource:
        if student.format is not ModelFormat.TORCH_SCRIPT:
            raise ValueError("the student must be a TorchScript archive (its weights are trained and saved), "
                             f"not {student.format.value}")
        return student


class LowRankPass(PassBase):
    """Factor each large MatMul / Gemm weight W (n×m) of an ONNX model into U (n×r) · V (r×m) by SVD.
    Faster and smaller only when r < n·m / (n + m); layers where it would not pay stay as they are."""

    type: Literal["LowRank"]
    energy: float | None = Field(None, gt=0, le=1, description="Keep the smallest rank whose singular values hold "
                                 "this share of the squared spectrum (default 0.9 when no other choice is set).")
    rank_ratio: float | None = Field(None, gt=0, le=1, description="Keep this fraction of each layer's full rank.")
    rank: int | None = Field(None, ge=1, description="The same rank for every factored layer; must not exceed any of them.")
    min_weights: int = Field(16_384, ge=1, description="Leave layers with fewer weights alone.")

    @model_validator(mode="after")
    def _one_rank_rule(self) -> "LowRankPass":
        chosen = [n for n, v in (("energy", self.energy), ("rankRatio", self.rank_ratio), ("rank", self.rank)) if v is not None]
        if len(chosen) > 1:
            raise ValueError(f"set one of energy, rankRatio, rank (got {', '.join(chosen)})")
        if not chosen:
            self.energy = 0.9
        return self


_PASS_SPECS = (OnnxExportPass, OrtOptimizePass, DynamicInt8Pass, StaticInt8Pass, AutoQuantizePass, Fp16Pass, TensorRtPass,
               OpenVinoConvertPass, OpenVinoInt8Pass, OpenVinoWeightCompressionPass, Int4WeightOnlyPass,
               PrunePass, StructuredPrunePass, TransformerCompressPass, DistillPass, LowRankPass)
PassSpec = Annotated[Union[_PASS_SPECS], Field(discriminator="type")]
# Each pass type is declared once, by its spec's `type` literal.


def pass_type_of(spec_class: type[PassBase]) -> str:
    """The `type` a pass spec class declares (its Literal): the one place a pass type is written."""
    return spec_class.model_fields["type"].annotation.__args__[0]


PASS_TYPES: tuple[str, ...] = tuple(pass_type_of(spec) for spec in _PASS_SPECS)


# --- goals and measurement ---------------------------------------------------------------

_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
_QUANTITY_FACTORS = {
    None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}


def parse_size(value: int | str) -> int:
    """Bytes from an int or a Kubernetes-style quantity ("12Mi", "5M", "1500")."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 12Mi or a number of bytes")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be ≥ 0")
        return value
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"'{value}' is not a size such as 12Mi, 5M or 1500")
    return int(float(match.group(1)) * _QUANTITY_FACTORS[match.group(2)])


class Percentile(str, Enum):
    P50 = "P50"
    P95 = "P95"
    P99 = "P99"


class LatencyGoal(Model):
    percentile: Percentile = Percentile.P50
    max_milliseconds: float = Field(gt=0)
    batch_size: int | None = Field(None, ge=1, description="Defaults to the first of benchmark.batchSizes.")


class DropMode(str, Enum):
    ABSOLUTE = "Absolute"  # points of the metric: percentage points for accuracy
    RELATIVE = "Relative"  # percent of the baseline's value


class Objective(str, Enum):
    LATENCY = "Latency"
    SIZE = "Size"
    ACCURACY = "Accuracy"


class Goals(Model):
    max_accuracy_drop: float | None = Field(
        None, ge=0, description="Largest acceptable loss of the metric (points for accuracy in Absolute mode)."
    )
    accuracy_drop_mode: DropMode = DropMode.ABSOLUTE
    latency: LatencyGoal | None = None
    max_size: int | str | None = Field(None, description="Largest acceptable model file: bytes or a quantity (12Mi).")
    optimize_for: Objective = Field(Objective.LATENCY, description="What the best pick minimizes among accepted candidates.")

    @field_validator("max_size")
    @classmethod
    def _size_parses(cls, value: int | str | None) -> int | str | None:
        if value is not None:
            parse_size(value)
        return value

    @property
    def max_size_bytes(self) -> int | None:
        return None if self.max_size is None else parse_size(self.max_size)


class Benchmark(Model):
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32], min_length=1, max_length=8)
    warmup: int = Field(10, ge=0, le=10_000)
    iterations: int = Field(50, ge=1, le=100_000, description="Timed calls per candidate, batch size and round.")
    rounds: int = Field(5, ge=1, le=100, description="Candidates are measured interleaved, round after round.")
    threads: int = Field(1, ge=1, le=256, description="Intra-op threads for every runtime.")
    tie_tolerance: float = Field(0.05, ge=0, le=1, description="Latencies this close (relative) count as a tie.")
    evaluation_batch_size: int = Field(256, ge=1, le=65_536)

    @field_validator("batch_sizes")
    @classmethod
    def _positive_unique(cls, sizes: list[int]) -> list[int]:
        if any(size < 1 for size in sizes):
            raise ValueError("every batch size must be ≥ 1")
        if len(set(sizes)) != len(sizes):
            raise ValueError("batch sizes must be unique")
        return sizes


class SearchRange(Model):
    """One pass parameter to search: a numeric range, or a list of choices."""

    pass_name: str = Field(alias="pass", min_length=1, description="Name of the pass whose parameter is searched.")
    parameter: str = Field(min_length=1, pattern=r"^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*$",
                           description="The field as written in the pass, dotted into objects: amount, fineTuning.learningRate.")
    low: float | None = Field(None, description="Lower end of a numeric range (integers when the parameter is an integer).")
    high: float | None = Field(None, description="Upper end of a numeric range, inclusive.")
    log: bool = Field(False, description="Sample the range on a log scale (learning rates).")
    choices: list[int | float | str | bool] | None = Field(None, min_length=1, max_length=256, description="Values to choose among, instead of a range.")

    @model_validator(mode="after")
    def _range_or_choices(self) -> "SearchRange":
        has_range = self.low is not None or self.high is not None
        if has_range == (self.choices is not None):
            raise ValueError("set either low and high, or choices")
        if has_range:
            if self.low is None or self.high is None:
                raise ValueError("a range needs both low and high")
            if self.low >= self.high:
                raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
            if self.log and self.low <= 0:
                raise ValueError("a log range needs low > 0")
        return self


class SecretKeyRef(Model):
    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    key: str = Field("url", min_length=1, description="The key holding the value.")


class Tuning(Model):
    """An Optuna study over pass parameters. Each trial reruns the chain from the first searched
    pass to `target` with sampled values and is judged on the validation split; the best trials join
    the candidates and are measured like every other. The study is saved in the artifact store after
    every trial, so an interrupted run resumes where it stopped."""

    search_space: list[SearchRange] = Field(max_length=64, json_schema_extra={"minItems": 1})
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective.LATENCY, Objective.SIZE, Objective.ACCURACY], min_length=1, max_length=3,
        description="One objective: a single best; several: a Pareto front. All are minimized (Accuracy as its drop); "
                    "goals become constraints.")
    target: str | None = Field(None, description="Pass whose output a trial is judged on (default: the last pass fed by a searched one).")
    trials: int = Field(20, ge=1, le=10_000, description="Finished trials the study should hold, counting earlier attempts.")
    timeout_seconds: int | None = Field(None, ge=1, description="Stop starting trials after this long (per attempt).")
    max_failed_trials: int = Field(5, ge=1, description="Stop the study when this many trials have failed.")
    prune_weak_trials: bool | None = Field(
        None, description="Stop trials whose validation metric lags the median while fine-tuning (needs objectives: [Accuracy]; on by default then).")
    stop_when_acceptable: bool = Field(False, description="Stop at the first trial that meets every goal, instead of using the whole budget.")
    keep_best: int = Field(3, ge=1, le=20, description="How many of the best trials become candidates.")
    validation_split: str = Field("calibration", min_length=1, description="Split trials are judged on (keeps the evaluation split unseen).")
    seed: int = Field(0, ge=0)
    parallelism: int = Field(1, ge=1, le=64, description=(
        "Trials run at once. Above 1 (on the cluster) a tuning Job of that many worker Pods runs the trials, all on "
        "one study in a shared database (storageSecret); then the run's Job measures the best trials with the other "
        "candidates on one node. Each worker Pod takes a Job slot."))
    storage_secret: SecretKeyRef | None = Field(None, description=(
        "Secret in the run's namespace holding the study database's URL (postgresql://…), for parallelism above 1; "
        "default: the operator's studyStorageSecret."))
    heartbeat_seconds: int = Field(10, ge=1, le=600, description=(
        "With a shared study: how often a running trial reports it is alive; a trial silent for three "
        "heartbeats (its Pod died) is marked failed and retried."))

    @field_validator("search_space")
    @classmethod
    def _not_empty(cls, ranges: list[SearchRange]) -> list[SearchRange]:
        if not ranges:
            raise ValueError("the search space is empty: name at least one pass parameter to search, "
                             "e.g. {pass: prune, parameter: amount, low: 0.3, high: 0.8}")
        return ranges

    @field_validator("objectives")
    @classmethod
    def _unique_objectives(cls, objectives: list[Objective]) -> list[Objective]:
        if len(set(objectives)) != len(objectives):
            raise ValueError("objectives must be unique")
        return objectives

    @model_validator(mode="after")
    def _parallelism_within_trials(self) -> "Tuning":
        if self.parallelism > self.trials:
            raise ValueError(f"parallelism ({self.parallelism}) is above trials ({self.trials}): "
                             f"the extra Pods would have no trial to run")
        return self

    @model_validator(mode="after")
    def _pruning_needs_one_accuracy_objective(self) -> "Tuning":
        single_accuracy = self.objectives == [Objective.ACCURACY]
        if self.prune_weak_trials and not single_accuracy:
            raise ValueError("pruneWeakTrials needs objectives: [Accuracy] (Optuna prunes on intermediate values of a "
                             "single objective, and only accuracy changes while fine-tuning)")
        if self.prune_weak_trials is None:
            self.prune_weak_trials = single_accuracy
        return self


class Artifacts(Model):
    uri: str | None = Field(
        None, description="Local directory or s3://bucket/prefix; the CLI defaults to ./kompress-runs."
    )
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph); AWS when unset.")
    region: str | None = None


class Promotion(Model):
    """Publish the run's pick to a stable place a serving stack reads (promotion.py), unless the
    model promoted before is as good: a later run measures it as one more contender."""

    uri: str | None = Field(None, description=(
        "Local directory or s3://bucket/prefix for current.json, current/ and releases/; "
        "default <artifacts>/<namespace>/<name>."))
    fidelity_tolerance: float = Field(0.0, ge=0, description=(
        "How much larger (in the goal's accuracy-drop units) the new pick's drop may be than the promoted "
        "model's, measured on this run's data; 0 means no worse."))


class ConcurrencyPolicy(str, Enum):
    """As a CronJob's, for a run whose time comes while the last one still runs."""

    FORBID = "Forbid"  # skip this time
    REPLACE = "Replace"  # stop the running one, start the new one


class ReoptimizeOn(Model):
    model_change: bool = Field(False, description="Run again when the model's digest changes (S3 ETag, file SHA-256).")
    job_image_change: bool = Field(False, description="Run again when the job image the operator would use changes.")


# --- how the operator runs the Job -------------------------------------------------------


class Device(str, Enum):
    CPU = "CPU"
    GPU = "GPU"


class Toleration(Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Resources(Model):
    """Container resources as in a Pod spec (quantities: 2, "500m", "4Gi")."""

    requests: dict[str, int | str] = Field(default_factory=dict, max_length=32)
    limits: dict[str, int | str] = Field(default_factory=dict, max_length=32)


class JobSettings(Model):
    image: str | None = Field(None, description="Job image; the operator's default CPU or GPU image when unset.")
    device: Device = Device.CPU
    gpus: int = Field(0, ge=0, le=16, description="nvidia.com/gpu count; 1 when device is GPU and unset.")
    resources: Resources = Field(default_factory=Resources)
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    priority_class_name: str | None = None
    service_account_name: str | None = None
    priority: int = Field(0, ge=-1000, le=1000, description="Higher runs first when the operator queues runs.")
    active_deadline_seconds: int | None = Field(None, ge=1)
    backoff_limit: int = Field(1, ge=0, le=10)
    ttl_seconds_after_finished: int | None = Field(None, ge=0)


# --- the resource ------------------------------------------------------------------------


class ModelOptimizationSpec(Model):
    model: ModelSource
    data: DataSource
    task: Task = Field(default_factory=Task)
    passes: list[PassSpec] = Field(min_length=1, max_length=32)
    goals: Goals = Field(default_factory=Goals)
    benchmark: Benchmark = Field(default_factory=Benchmark)
    tuning: Tuning | None = None
    artifacts: Artifacts = Field(default_factory=Artifacts)
    promotion: Promotion | None = Field(None, description="Off unless set; `promotion: {}` promotes to the default place.")
    schedule: str | None = Field(None, min_length=1, description=(
        "Cron expression (5 fields, UTC) for re-running the optimization, as a CronJob's schedule."))
    starting_deadline_seconds: int | None = Field(None, ge=1, description=(
        "A scheduled run missed by more than this is skipped, as a CronJob's."))
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    reoptimize_on: ReoptimizeOn = Field(default_factory=ReoptimizeOn)
    job: JobSettings = Field(default_factory=JobSettings)

    @field_validator("schedule")
    @classmethod
    def _schedule_is_cron(cls, value: str | None) -> str | None:
        from .cron import check_schedule

        return None if value is None else check_schedule(value)

    @model_validator(mode="after")
    def _drop_mode_fits_metric(self) -> "ModelOptimizationSpec":
        if self.goals.accuracy_drop_mode is DropMode.RELATIVE and self.task.metric in (Metric.KL_DIVERGENCE, Metric.RELATIVE_ERROR):
            raise ValueError(f"goals.accuracyDropMode Relative needs a metric whose baseline value is not zero; "
                             f"{self.task.metric.value} of the baseline to itself is 0 (use Absolute)")
        return self

    @model_validator(mode="after")
    def _text_data_has_a_tokenizer(self) -> "ModelOptimizationSpec":
        text = self.data.text
        if text is not None and text.tokenizer is None and self.model.format is not ModelFormat.HUGGING_FACE:
            raise ValueError("data.text.tokenizer: text data needs a tokenizer directory unless the model is a HuggingFace checkpoint")
        if text is not None and self.task.needs_labels and text.label_column is None:
            raise ValueError(f"data.text.labelColumn: a {self.task.type.value} task needs labels (or use task.type: Fidelity)")
        return self

    @model_validator(mode="after")
    def _latency_goal_is_measured(self) -> "ModelOptimizationSpec":
        goal = self.goals.latency
        if goal and goal.batch_size and goal.batch_size not in self.benchmark.batch_sizes:
            raise ValueError(
                f"goals.latency.batchSize {goal.batch_size} is not among benchmark.batchSizes {self.benchmark.batch_sizes}"
            )
        return self


class ConditionStatus(str, Enum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Phase(str, Enum):
    PENDING = "Pending"
    QUEUED = "Queued"
    TUNING = "Tuning"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


# metav1.Condition's rules, so the API server checks what kubectl explain documents.
CONDITION_TYPE = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
TIMESTAMP = {"format": "date-time"}


class Condition(Model):
    """One aspect of the run's state, in the Kubernetes condition convention."""

    type: str = Field(max_length=316, pattern=CONDITION_TYPE, description="Accepted, Running, Succeeded, Reconciling or Stalled.")
    status: ConditionStatus
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON,
                        description="CamelCase reason for the last transition (e.g. InvalidSpec, ConcurrencyLimit, Completed).")
    message: str = Field("", max_length=32768, description="What a person needs to know about the transition.")
    last_transition_time: str = Field(json_schema_extra=TIMESTAMP, description="When the status last changed.")
    observed_generation: int | None = Field(None, ge=0, description="The metadata.generation the condition was set for.")


class CandidateSummary(Model):
    """One candidate model, as measured (latency at the report's primary batch size)."""

    name: str
    technique: str
    accepted: bool = Field(description="Whether it met every goal.")
    pareto_optimal: bool = False
    latency_p50_ms: float | None = None
    size_bytes: int | None = None
    metric_value: float | None = None
    speedup: float | None = Field(None, description="Baseline p50 latency / this candidate's.")
    size_ratio: float | None = Field(None, description="Baseline size / this candidate's.")
    rejected_reason: str | None = None


class ArtifactRef(Model):
    uri: str = Field(description="Where the run's artifacts and report.json are.")
    manifest_sha256: str | None = Field(None, description="Digest of manifest.json, which lists every artifact's digest.")


class TrialCounts(Model):
    """Trials of a study as the study counts them (finished: with a verdict; failed: with an error,
    or lost with a worker Pod and retried). Written when a worker Pod leaves, and when the run's
    Job has read the study; the study itself is live in the workers' logs and the database."""

    finished: int = Field(0, ge=0)
    failed: int = Field(0, ge=0)
    running: int = Field(0, ge=0)


class WorkerCounts(Model):
    """The tuning Job's worker Pods, live from the Job's status."""

    active: int = Field(0, ge=0)
    succeeded: int = Field(0, ge=0, description="Workers that left because the study was over.")
    failed: int = Field(0, ge=0, description="Workers lost (a replacement takes over; their trial is retried).")


class TuningStatus(Model):
    study: str | None = Field(None, description="The Optuna study's name.")
    parallelism: int = Field(1, ge=1)
    workers: WorkerCounts | None = None
    trials: TrialCounts | None = None


class PromotionDecision(str, Enum):
    PROMOTED = "Promoted"
    KEPT = "Kept"  # the promoted model stays: the pick was not better, or there was none
    FAILED = "Failed"  # the switch could not be written; the promoted model stays


class PromotionStatus(Model):
    """The last run's promotion decision, and the model promoted now (after that decision)."""

    decision: PromotionDecision
    reason: str = Field(pattern=CONDITION_REASON)
    message: str = ""
    pointer: str | None = Field(None, description="URI of current.json.")
    uri: str | None = Field(None, description="URI of the promoted model's files (immutable, one folder per run).")
    digest: str | None = Field(None, description="SHA-256 of the promoted model.")
    run_id: str | None = Field(None, description="The run the promoted model comes from.")
    candidate: str | None = None
    promoted_at: str | None = Field(None, json_schema_extra=TIMESTAMP)


class ReoptimizationStatus(Model):
    """What re-runs the resource without a spec change: its schedule and the model or image it watches."""

    runs: int = Field(0, ge=0, description="Re-runs so far (not counting spec changes); names the Job (…-r<runs>).")
    reason: str | None = Field(None, description="Why the current run started: Scheduled, ModelChanged or JobImageChanged.")
    message: str | None = None
    last_schedule_time: str | None = Field(None, json_schema_extra=TIMESTAMP)
    generation: int | None = Field(None, ge=0, description="The generation the model digest and job image were recorded for.")
    model_uri: str | None = None
    model_digest: str | None = Field(None, description="The model's digest (S3 ETag, file SHA-256) as first seen for this run.")
    job_image: str | None = Field(None, description="The job image the operator would use, as first seen for this run.")


class ModelOptimizationStatus(Model):
    """Written by the operator: where the run stands (conditions) and what it found."""

    observed_generation: int | None = Field(None, ge=0, description="The metadata.generation this status is for.")
    phase: Phase | None = Field(None, description="For humans; the contract is conditions.")
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    baseline: CandidateSummary | None = None
    best: CandidateSummary | None = Field(None, description="The pick: the best candidate that met every goal.")
    candidates: list[CandidateSummary] = Field(default_factory=list, description="The Pareto front first, then the best-ranked.")
    artifacts: ArtifactRef | None = None
    run_id: str | None = Field(None, description="The run's folder in the artifact store.")
    tuning: TuningStatus | None = Field(None, description="The tuning study of a run with spec.tuning.")
    promotion: PromotionStatus | None = Field(None, description="With spec.promotion: what is promoted, and why.")
    reoptimization: ReoptimizationStatus | None = None
    start_time: str | None = Field(None, json_schema_extra=TIMESTAMP)
    completion_time: str | None = Field(None, json_schema_extra=TIMESTAMP)


class ObjectMeta(Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None


class ModelOptimization(Model):
    api_version: Literal["kompress.io/v1alpha1"]
    kind: Literal["ModelOptimization"]
    metadata: ObjectMeta
    spec: ModelOptimizationSpec
    status: ModelOptimizationStatus | None = None
