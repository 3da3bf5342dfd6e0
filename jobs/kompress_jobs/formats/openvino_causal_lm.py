"""A causal LM as optimum-intel writes it: a stateful IR (openvino_model.xml/.bin, the key/value cache
held inside the model), config.json and the tokenizer, in one folder."""

from __future__ import annotations

from ..spec.sources import ModelFormat
from .base import Format, register


@register
class OpenVinoCausalLM(Format):
    format = ModelFormat.OPENVINO_CAUSAL_LM
    describe = "an OpenVINO causal LM folder"
    marker = "openvino_model.xml"
    generative_only = True
    weights = (".xml", ".bin")
