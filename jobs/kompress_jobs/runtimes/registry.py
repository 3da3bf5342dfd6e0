"""The runtimes kompress knows, found by what they declare: adding a runtime is a module in this
package with a Runner subclass decorated by `@register`; nothing else names it."""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import ModelLoadError
from ..modelfile import ModelFile
from .base import Processor, Runner

_RUNTIMES: list[type[Runner]] = []
_discovered = False


def register(cls: type[Runner]) -> type[Runner]:
    """Add a runner class. Among the defaults, two classes never claim the same format on the same
    device for the same kind of model (a checkpoint is an encoder or a causal LM), so the choice never
    depends on import order; a runtime that is not a default is chosen by name (Execution.runtime)."""
    for other in _RUNTIMES:
        shared = {(f, d) for f in cls.formats & other.formats for d in set(cls.devices) & set(other.devices)
                  if cls.generative == other.generative}
        if shared and other is not cls and cls.default and other.default:
            raise ValueError(f"{cls.__name__} and {other.__name__} both run {sorted((f.value, d.value) for f, d in shared)} "
                             f"by default")
        if shared and other is not cls and cls.runtime == other.runtime:
            raise ValueError(f"{cls.__name__} and {other.__name__} are both runtime {cls.runtime!r} for the same models")
    if cls not in _RUNTIMES:
        _RUNTIMES.append(cls)
    return cls


def runtimes() -> list[type[Runner]]:
    """Every registered runner class; the first call imports each module of this package (they
    import their libraries only when a runner is made, so this is cheap)."""
    global _discovered
    if not _discovered:
        for module in pkgutil.iter_modules(importlib.import_module(__package__).__path__):
            importlib.import_module(f"{__package__}.{module.name}")
        _discovered = True
    return list(_RUNTIMES)


def runtime_for(model: ModelFile, device: Processor | None = None) -> type[Runner]:
    """The runtime the model's Execution names, else the default one for its format on `device`
    (where the runtime runs by default when None), or ModelLoadError naming what would run it."""
    fitting = [cls for cls in runtimes() if model.format in cls.formats and cls.generative == model.generative]
    if not fitting:
        kind = " as a causal language model" if model.generative else ""
        raise ModelLoadError(f"model file {model.path}: no runtime runs {model.format.value} models{kind}")
    named = model.execution.runtime
    if named is not None:
        fitting = [cls for cls in fitting if cls.runtime == named]
        if not fitting:
            offered = ", ".join(sorted({cls.runtime for cls in runtimes() if model.format in cls.formats}))
            raise ModelLoadError(f"model file {model.path}: runtime {named!r} does not run {model.format.value} models "
                                 f"(these do: {offered})")
    for cls in fitting:
        if (device is None or device in cls.devices) and (cls.default or named is not None):
            return cls
    offered = "; ".join(f"{cls.runtime} on {', '.join(d.value for d in cls.devices)}" for cls in fitting)
    raise ModelLoadError(f"model file {model.path}: no runtime runs {model.format.value} models on {device.value} "
                         f"(it runs with {offered})")


def make_runner(model: ModelFile, *, threads: int, device: Processor | None = None,
                input_names: tuple[str, ...] | None = None, contain: bool = True) -> Runner:
    """A runner for any candidate, from the registry, on `device`, else where the model's Execution
    says it runs, else where its runtime runs by default. `input_names` is needed only where the
    file does not name its inputs (a Hugging Face checkpoint takes whatever the tokenizer gives).
    A runtime that declares `contained` runs in a process of its own (contained.py), unless
    `contain` is False: in a process that is already the model's own (the memory probe)."""
    from pydantic import ValidationError

    from ..formats import check_model_files

    check_model_files(model.path, model.format, model.extra_files)  # the format's door, before any library reads it
    device = device or model.execution.device
    cls = runtime_for(model, device)
    where = device or cls.devices[0]
    try:
        cls.options_of(model)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ModelLoadError(f"model file {model.path}: {cls.runtime} options: {'.'.join(map(str, first['loc'])) or 'options'}: "
                             f"{first['msg']}") from None
    reason = cls.unavailable(where)
    if reason:
        raise ModelLoadError(f"model file {model.path}: {cls.runtime} cannot run it on {where.value} here: {reason}")
    if cls.contained and contain:
        from .contained import contained_runner

        return contained_runner(cls, model, threads=threads, device=where, input_names=input_names)
    return cls(model, threads=threads, device=where, input_names=input_names)
