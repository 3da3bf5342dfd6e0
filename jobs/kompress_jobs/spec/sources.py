"""What a run optimizes: the model as users keep it, and the data it is measured and calibrated on."""

from __future__ import annotations

from enum import Enum

from pydantic import Field, model_validator

from .wire import Model


class Device(str, Enum):
    """The kind of node a Job (spec.job.device) or a candidate (TorchRuntime's device) runs on."""

    CPU = "CPU"
    GPU = "GPU"


class ModelFormat(str, Enum):
    ONNX = "ONNX"
    TORCH_SCRIPT = "TorchScript"  # torch.jit.save archive
    TORCH_EXPORT = "TorchExport"  # torch.export.save program (.pt2)
    TENSORRT = "TensorRT"  # serialized engine; runs only on the GPU model and TensorRT version that built it
    HUGGING_FACE = "HuggingFace"  # a checkpoint directory: config.json, *.safetensors, tokenizer files
    OPENVINO = "OpenVINO"  # IR: model.xml, with its weights in model.bin beside it
    GGUF = "GGUF"  # a llama.cpp file of a causal language model; read by transformers, de-quantized to FP32
    ONNX_GENAI = "OnnxGenAI"  # ONNX Runtime GenAI folder: genai_config.json, model.onnx (+ data), tokenizer
    # a causal LM as optimum-intel writes it: a stateful IR (openvino_model.xml/.bin, the key/value
    # cache held inside the model), config.json and the tokenizer
    OPENVINO_CAUSAL_LM = "OpenVINOCausalLM"
    EXECUTORCH = "ExecuTorch"  # a .pte program (PyTorch Mobile's successor), its ops delegated to XNNPACK
    LITERT = "LiteRT"  # a .tflite flatbuffer (TensorFlow Lite's successor), run by LiteRT's interpreter on XNNPACK
    TVM = "TVM"  # a library Apache TVM compiled for one CPU, with its weights: only ever built by a run (formats/tvm.py)


# Formats only kompress writes: a compiled library is native code, never taken from a user
BUILT_ONLY = frozenset({ModelFormat.TVM})
SOURCE_FORMATS = [f.value for f in ModelFormat if f not in BUILT_ONLY]



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
    uri: str = Field(min_length=1, description="Path or s3:// URI of the model file (a directory for HuggingFace, "
                     "OnnxGenAI and OpenVINOCausalLM).")
    format: ModelFormat = Field(description="How the model was saved. Pickled modules are never loaded.",
                                json_schema_extra={"enum": SOURCE_FORMATS})
    hugging_face: HuggingFaceOptions | None = Field(None, description="HuggingFace format only; defaults apply when unset.")

    @model_validator(mode="after")
    def _options_fit_format(self) -> "ModelSource":
        if self.format in BUILT_ONLY:
            raise ValueError(f"format {self.format.value} is a compiled library only kompress builds in a run (it runs native "
                             "code); give the model it was compiled from (ONNX) and a pass that builds it")
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
                    "optional), of a .jsonl / .csv / .parquet text file (with `text`), or, for task LanguageModeling, "
                    "of a plain UTF-8 text file (evaluation text first, calibration text after it).",
    )
    text: TextData | None = Field(None, description="Read the file as text rows and tokenize them.")
    train_split: str = Field("train", min_length=1, description="Split used to fine-tune.")
    calibration_split: str = Field("calibration", min_length=1, description="Split used to calibrate static quantization.")
    evaluation_split: str = Field("evaluation", min_length=1, description="Split used to measure the metric and latency.")
