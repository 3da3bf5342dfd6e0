"""Resolve the ordered list of passes into steps: which model each pass takes, checked up front.

Doing this before any work lets `kompress validate` reject a chain that cannot run
(e.g. quantizing a TorchScript model without exporting it to ONNX first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import SpecError
from ..passes import OptimizationPass, build_pass
from ..spec.schema import ModelOptimizationSpec
from .search_space import plan_tuning

BASELINE = "baseline"


@dataclass(frozen=True)
class Step:
    index: int
    name: str
    input: str
    optimization: OptimizationPass


# Product names that are one word, whatever their capitals.
_ONE_WORD = {"TensorRT": "Tensorrt", "OpenVino": "Openvino", "GenAI": "Genai"}


def default_name(pass_type: str) -> str:
    """OnnxExport -> onnx-export, StaticInt8 -> static-int8, TensorRT -> tensorrt, OpenVinoInt8 -> openvino-int8."""
    for word, plain in _ONE_WORD.items():
        pass_type = pass_type.replace(word, plain)
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", pass_type).lower()


def plan_passes(spec: ModelOptimizationSpec) -> list[Step]:
    formats = {BASELINE: spec.model.format}
    head = BASELINE
    steps: list[Step] = []
    for index, pass_spec in enumerate(spec.passes):
        where = f"spec.passes[{index}]"
        optimization = build_pass(pass_spec)
        problem = optimization.check(spec)
        if problem:
            raise SpecError(f"{where}.{problem}")
        if optimization.generative != spec.task.generative:
            kind = "causal language models (task.type: LanguageModeling)" if optimization.generative else \
                "models that are called once per batch, not a causal language model"
            raise SpecError(f"{where}.type: {pass_spec.type} works on {kind}; task.type is {spec.task.type.value}")
        name = pass_spec.name or _unique(default_name(pass_spec.type), formats)
        if name in formats:
            raise SpecError(f"{where}.name: {name!r} is already used by an earlier pass")
        source = pass_spec.input or head
        if source not in formats:
            raise SpecError(f"{where}.input: no earlier pass is named {source!r} (known: {', '.join(formats)})")
        if formats[source] not in optimization.accepts:
            accepted = sorted(f.value for f in optimization.accepts)
            needs = " or ".join(accepted) if len(accepted) < 3 else f"{', '.join(accepted[:-1])} or {accepted[-1]}"
            hint = "; add a pass of type OnnxExport before it" if needs == "ONNX" else ""
            raise SpecError(
                f"{where}: {pass_spec.type} needs {'an' if needs[0] in 'AEIOU' else 'a'} {needs} model but {source!r} is {formats[source].value}{hint}"
            )
        formats[name] = optimization.output_format_for(formats[source])
        if optimization.moves_head:
            head = name
        steps.append(Step(index, name, source, optimization))
    if spec.tuning is not None:
        plan_tuning(spec, steps)
    return steps


def _unique(name: str, taken: dict) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    return candidate
