"""A causal language model and its tokenizer from a local checkpoint folder or a GGUF file, with the
same rules as every other loader: no hub download, no remote code, never a pickled weight file
(huggingface.read_config refuses them). A tokenizer that is saved is reloaded and compared on a
sample of the text before anything is built on it: some transformers versions write GGUF
tokenizers that reload as another class and map spaces to <unk>, which ruins every figure after."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from ..errors import DataError, ModelLoadError
from ..huggingface import read_config
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat


def gguf_architecture(path: Path) -> str:
    """The architecture a GGUF file declares, read from its header with bounds (formats.gguf) before
    transformers' reader parses the whole file; ModelLoadError when transformers cannot read it."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    from ..formats.gguf import architecture as declared, shown

    where = f"model file {path}"
    if not path.is_file():
        raise ModelLoadError(f"{where}: no such file (a GGUF model is one .gguf file)")
    architecture = declared(path)
    if architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(f"{where}: transformers cannot read GGUF models of architecture {shown(architecture)!r} "
                             f"(it reads {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}); convert it to a Hugging "
                             "Face checkpoint folder (format: HuggingFace)")
    return architecture


def load_causal_lm(model: ModelFile):
    """The model as a transformers module in FP32 on the CPU (GGUF weights de-quantized: the
    baseline as the user keeps it is what those weights compute)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..huggingface import _offline

    _offline()
    common = dict(local_files_only=True, trust_remote_code=False, dtype=torch.float32)
    try:
        if model.format is ModelFormat.GGUF:
            gguf_architecture(model.path)
            # transformers' GGUF reader draws a progress bar of its own on stderr; the run reports its own progress
            with contextlib.redirect_stderr(io.StringIO()):
                module = AutoModelForCausalLM.from_pretrained(str(model.path.parent), gguf_file=model.path.name, **common)
            _forget_gguf_origin(module)
        elif model.format is ModelFormat.HUGGING_FACE:
            config = read_config(model.path)
            if not any(a.endswith("ForCausalLM") for a in config.get("architectures", [])):
                raise ModelLoadError(f"model directory {model.path}: config.json names no …ForCausalLM architecture "
                                     f"({', '.join(config.get('architectures', [])) or 'none'}); task LanguageModeling "
                                     "needs a causal language model")
            module = AutoModelForCausalLM.from_pretrained(str(model.path), use_safetensors=True, **common)
        else:
            raise ModelLoadError(f"model {model.path}: {model.format.value} is not loaded by transformers")
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"model {model.path}: transformers could not load it as a causal language model: "
                             f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__}") from None
    return module.eval()


def _forget_gguf_origin(module) -> None:
    """A model read from GGUF keeps a marker that forbids save_pretrained; its weights are plain FP32
    tensors by now, so the checkpoint it writes is exactly the model that was measured."""
    module.hf_quantizer = None
    if hasattr(module.config, "quantization_config"):
        del module.config.quantization_config
    module.is_quantized = False


_GGUF_TOKENIZERS: dict[tuple[str, int, int], object] = {}


def load_tokenizer(model: ModelFile):
    """The tokenizer that ships with the model (a GGUF file carries its own). A GGUF tokenizer is
    rebuilt from the file's vocabulary and merges, which takes most of a minute: it is read once per
    process (the run's loader and its passes share it) and only used, never changed."""
    from transformers import AutoTokenizer

    from ..huggingface import _offline

    _offline()
    try:
        if model.format is ModelFormat.GGUF:
            stat = model.path.stat()
            key = (str(model.path.resolve()), stat.st_size, stat.st_mtime_ns)
            if key not in _GGUF_TOKENIZERS:
                _GGUF_TOKENIZERS[key] = AutoTokenizer.from_pretrained(str(model.path.parent), gguf_file=model.path.name,
                                                                      local_files_only=True)
            return _GGUF_TOKENIZERS[key]
        return AutoTokenizer.from_pretrained(str(model.path), local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise ModelLoadError(f"model {model.path}: no tokenizer could be read from it: "
                             f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__}") from None


_SLOT = "\u2063KOMPRESS-MESSAGE\u2063"  # stands for the user's text while the template is rendered


def chat_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The token ids the chat template puts before and after one user message (with the prompt for
    the assistant's answer); DataError when the tokenizer has no template."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"benchmark.generation.chatTemplate: the model's tokenizer ({type(tokenizer).__name__}) has no chat "
                        f"template; set chatTemplate: false to time plain text prompts")
    from ..bounded import BoundExceeded, call_bounded

    # transformers renders it in Jinja's sandbox (a template reaching for Python objects fails there),
    # and in a child bounded in time and memory (a template that never ends costs seconds, not the slot)
    try:
        rendered = call_bounded(lambda: tokenizer.apply_chat_template(
            [{"role": "user", "content": _SLOT}], tokenize=False, add_generation_prompt=True))
    except BoundExceeded as exc:  # Jinja's SecurityError, TemplateError, the template's own raise, or a bound
        raise DataError(f"benchmark.generation.chatTemplate: the model's chat template cannot be rendered ({exc})") from None
    if rendered.count(_SLOT) != 1:
        raise DataError("benchmark.generation.chatTemplate: the model's chat template does not place the user's message once")
    before, after = rendered.split(_SLOT)
    return (tokenizer(before, add_special_tokens=False).input_ids, tokenizer(after, add_special_tokens=False).input_ids)


def check_round_trip(tokenizer, folder: Path, sample: str) -> None:
    """ModelLoadError unless the tokenizer written to `folder` gives the same ids on `sample`."""
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    before, after = tokenizer(sample).input_ids, reloaded(sample).input_ids
    if before != after:
        at = next((i for i, (a, b) in enumerate(zip(before, after)) if a != b), min(len(before), len(after)))
        raise ModelLoadError(
            f"the tokenizer does not survive being saved and reloaded ({type(tokenizer).__name__} came back as "
            f"{type(reloaded).__name__}; token ids differ from position {at} of a {len(before)}-token sample): "
            "a model built on it would be judged on other text than the baseline; use a transformers version "
            "whose tokenizer round trip holds")


def save_checkpoint(module, tokenizer, folder: Path, sample: str) -> Path:
    """A Hugging Face checkpoint folder (safetensors) of the module and its tokenizer, the tokenizer checked."""
    folder.mkdir(parents=True, exist_ok=True)
    module.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    check_round_trip(tokenizer, folder, sample)
    return folder


def checkpoint_input(model: ModelFile, ctx):
    """What a pass that reads a checkpoint folder (a model builder, an exporter) starts from: (the
    folder, the source's tokenizer, a sample of the evaluation text to check tokenizers on). A GGUF
    model is written as a checkpoint beside the candidates' folders, in the run's scratch ("_" starts
    no candidate name): every such pass of the run reuses it, and its tokenizer, checked against the
    GGUF's when it was written."""
    first_window = ctx.dataset.evaluation.inputs["input_ids"][0]
    if model.format is not ModelFormat.GGUF:
        read_config(model.path)  # the loader's rules (safetensors only, no remote code) before a tool reads it
        tokenizer = load_tokenizer(model)
        return model.path, tokenizer, tokenizer.decode(first_window)
    folder = ctx.output_dir.parent / f"_{model.path.stem}-checkpoint"
    written = (folder / "config.json").is_file()
    tokenizer = load_tokenizer(ModelFile(folder, ModelFormat.HUGGING_FACE) if written else model)
    sample = tokenizer.decode(first_window)
    if not written:
        ctx.log("writing the GGUF model as a checkpoint folder")
        save_checkpoint(load_causal_lm(model), tokenizer, folder, sample)
    return folder, tokenizer, sample
