"""Check `spec.tuning` against the pass chain and turn it into what a trial needs.

Runs before any work (and in the operator, without Optuna or torch), so a search over a parameter
that does not exist, a range a pass would reject, or a pass off the tuned chain is an error that
names the field.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from ..errors import SpecError
from ..passes import build_pass
from ..spec.schema import ModelOptimizationSpec, PassSpec
from ..spec.specfile import describe_errors
from ..spec.tuning_spec import SearchRange

_PASS_ADAPTER: TypeAdapter = TypeAdapter(PassSpec)
MAX_LISTED_POINTS = 4096  # a discrete space up to this size is listed, so no point is measured twice


@dataclass(frozen=True)
class SearchParameter:
    key: str  # Optuna's name for it: "<pass>.<parameter>"
    pass_name: str
    path: tuple[str, ...]  # wire names into the pass spec
    kind: str  # "int", "float" or "categorical"
    range: SearchRange


@dataclass(frozen=True)
class TuningPlan:
    start: str  # the candidate the tuned chain starts from
    chain: tuple  # the Steps from the first searched pass to the target, in order
    parameters: tuple[SearchParameter, ...]

    @property
    def target(self):
        return self.chain[-1]


def plan_tuning(spec: ModelOptimizationSpec, steps: list) -> TuningPlan:
    tuning = spec.tuning
    by_name = {step.name: step for step in steps}
    searched = []
    for index, search in enumerate(tuning.search_space):
        if search.pass_name not in by_name:
            raise SpecError(f"spec.tuning.searchSpace[{index}].pass: no pass is named {search.pass_name!r} "
                            f"(passes: {', '.join(by_name)})")
        searched.append(search.pass_name)

    target = tuning.target or _default_target(steps, set(searched))
    if target not in by_name:
        raise SpecError(f"spec.tuning.target: no pass is named {target!r}")
    ancestry = _ancestry(by_name, target)
    for index, name in enumerate(searched):
        if name not in ancestry:
            raise SpecError(f"spec.tuning.searchSpace[{index}].pass: {name!r} does not lead to the target {target!r} "
                            f"(its chain: {' → '.join(ancestry)}); set spec.tuning.target")
    first = min(ancestry.index(name) for name in searched)
    chain = tuple(by_name[name] for name in ancestry[first:])

    parameters = tuple(_parameter(index, search, spec.passes[by_name[search.pass_name].index])
                       for index, search in enumerate(tuning.search_space))
    keys = [p.key for p in parameters]
    if len(set(keys)) != len(keys):
        raise SpecError(f"spec.tuning.searchSpace: a parameter is listed twice ({', '.join(sorted({k for k in keys if keys.count(k) > 1}))})")
    if spec.data.evaluation_split == tuning.validation_split:
        raise SpecError("spec.tuning.validationSplit: must differ from spec.data.evaluationSplit, or the final "
                        "figures would be measured on the data the search was tuned on")
    return TuningPlan(start=chain[0].input, chain=chain, parameters=parameters)


def discrete_points(plan: TuningPlan) -> list[dict[str, Any]] | None:
    """Every point of the search space, when each parameter is discrete (choices, integer ranges)
    and there are at most MAX_LISTED_POINTS; None otherwise (a continuous space repeats no point)."""
    axes = []
    for parameter in plan.parameters:
        if parameter.kind == "categorical":
            values = list(parameter.range.choices)
        elif parameter.kind == "int":
            values = list(range(int(parameter.range.low), int(parameter.range.high) + 1))
        else:
            return None
        axes.append([(parameter.key, value) for value in values])
    if math.prod(len(axis) for axis in axes) > MAX_LISTED_POINTS:
        return None
    return [dict(point) for point in itertools.product(*axes)]


def unmeasured(points: list[dict[str, Any]], taken: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no trial has taken yet (finished, running or queued), in a random order."""
    left = [point for point in points if point not in taken]
    random.shuffle(left)
    return left


def with_values(pass_spec: BaseModel, values: dict[tuple[str, ...], Any]):
    """The pass spec with some parameters replaced, validated again as a whole."""
    wire = pass_spec.to_wire()
    for path, value in values.items():
        node = wire
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return _PASS_ADAPTER.validate_python(wire)


def _default_target(steps: list, searched: set[str]) -> str:
    """The last pass that a searched pass feeds, directly or through others."""
    fed = set(searched)
    target = None
    for step in steps:
        if step.name in fed or step.input in fed:
            fed.add(step.name)
            target = step.name
    return target


def _ancestry(by_name: dict, name: str) -> list[str]:
    chain = []
    while name in by_name:
        chain.append(name)
        name = by_name[name].input
    return chain[::-1]


def _parameter(index: int, search: SearchRange, pass_spec: BaseModel) -> SearchParameter:
    where = f"spec.tuning.searchSpace[{index}]"
    path = tuple(search.parameter.split("."))
    current = _current_value(pass_spec, path, where)
    if search.choices is not None:
        kind = "categorical"
        tried = [("choices", choice) for choice in search.choices]
    else:
        kind = "int" if isinstance(current, int) and not isinstance(current, bool) else "float"
        if kind == "float" and not isinstance(current, (int, float, type(None))):
            raise SpecError(f"{where}.parameter: {search.parameter} is not a number; search it with choices")
        if kind == "int" and not (float(search.low).is_integer() and float(search.high).is_integer()):
            raise SpecError(f"{where}: {search.parameter} is an integer; low and high must be whole numbers")
        cast = int if kind == "int" else float
        tried = [("low", cast(search.low)), ("high", cast(search.high))]
    for field, value in tried:
        try:
            build_pass(with_values(pass_spec, {path: value}))
        except ValidationError as exc:
            raise SpecError(f"{where}.{field}: {search.pass_name} rejects {search.parameter}={value!r}: "
                            + "; ".join(describe_errors(exc))) from None
    return SearchParameter(f"{search.pass_name}.{search.parameter}", search.pass_name, path, kind, search)


def _current_value(pass_spec: BaseModel, path: tuple[str, ...], where: str) -> Any:
    node: Any = pass_spec
    for depth, part in enumerate(path):
        fields = {info.alias or name: name for name, info in type(node).model_fields.items()}
        fields = {k: v for k, v in fields.items() if k not in ("type", "name", "input")}
        if part not in fields:
            owner = pass_spec.type if depth == 0 else ".".join(path[:depth])
            raise SpecError(f"{where}.parameter: {owner} has no parameter {part!r} (it has: {', '.join(fields)})")
        node = getattr(node, fields[part])
        if depth < len(path) - 1 and not isinstance(node, BaseModel):
            raise SpecError(f"{where}.parameter: {'.'.join(path[:depth + 1])} is not an object in {pass_spec.type}"
                            + ("; set it in the pass first" if node is None else ""))
    return node
