"""Structured pruning: remove whole channels and neurons so the network is really narrower.

Torch-Pruning finds which layers are coupled (a conv's filters, the next conv's input channels,
the batch norm between them, ...) and cuts them together. It needs an eager nn.Module, which a
TorchScript archive is not, so the spec names the Python callable that builds the architecture;
the input's weights are loaded into it, and the narrowed module is saved as TorchScript again.
"""

from __future__ import annotations

import importlib
from enum import Enum
from typing import Literal

from pydantic import Field

from ..errors import ModelLoadError, PassError, SpecError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from ..spec.wire import MAX_ITEMS
from .base import OptimizationPass, PassContext, register
from .settings import Distillation, FineTuning, PassSettings
from .training import distillation_loss, fine_tuning_loss, train


class Importance(str, Enum):
    L1 = "L1"
    L2 = "L2"


class StructuredPrunePass(PassSettings):
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



def build_architecture(reference: str, arguments: dict[str, int]):
    """Call `module:callable` from the Job image (never from the model file)."""
    import torch

    module_name, _, attribute = reference.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except ImportError as exc:
        raise SpecError(f"architecture: cannot import {module_name!r} ({exc}); it must be installed in the Job image") from None
    except AttributeError:
        raise SpecError(f"architecture: module {module_name!r} has no {attribute!r}") from None
    try:
        built = factory(**arguments)
    except TypeError as exc:
        raise SpecError(f"architecture: {reference}(**architectureArgs) failed: {exc}") from None
    if not isinstance(built, torch.nn.Module):
        raise SpecError(f"architecture: {reference} returned {type(built).__name__}, not a torch.nn.Module")
    return built


def load_weights(module, source) -> None:
    """The input's weights into the eager module; a mismatch names the first offending tensors."""
    try:
        module.load_state_dict(source.state_dict(), strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:400]
        raise ModelLoadError(f"the input's weights do not fit the architecture (was it already restructured?): {detail}") from None


def output_layers(module, example: tuple) -> list:
    """The last Linear / Conv layer to run: its width is the model's output and must not change."""
    import torch

    order = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m)) for m in module.modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))]
    try:
        with torch.no_grad():
            module(*example)
    finally:
        for hook in hooks:
            hook.remove()
    return order[-1:]


def to_torchscript(module, example: tuple):
    """Script when the code allows it (keeps control flow); otherwise trace with a real batch."""
    import torch

    try:
        return torch.jit.script(module)
    except Exception:
        with torch.no_grad():
            return torch.jit.trace(module, example, check_trace=False)


@register(StructuredPrunePass)
class StructuredPrune(OptimizationPass):
    technique = "structured-pruning"
    accepts = frozenset({ModelFormat.TORCH_SCRIPT})
    output_format = ModelFormat.TORCH_SCRIPT
    moves_head = True

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        import copy

        import torch
        import torch_pruning as tp

        from ..runtimes import load_torch_module

        spec = self.spec
        module = build_architecture(spec.architecture, spec.architecture_args)
        load_weights(module, load_torch_module(model))
        module.eval()
        example = tuple(torch.from_numpy(ctx.example_inputs[name]) for name in ctx.input_names)
        teacher = copy.deepcopy(module) if spec.distillation or not ctx.task.needs_labels else None

        named = dict(module.named_modules())
        unknown = [name for name in spec.ignored_layers if name not in named]
        if unknown:
            raise SpecError(f"ignoredLayers: no module named {', '.join(map(repr, unknown))} (known: {', '.join(n for n in named if n)[:300]})")
        ignored = output_layers(module, example) + [named[name] for name in spec.ignored_layers]
        before = sum(p.numel() for p in module.parameters())
        try:
            pruner = tp.pruner.MetaPruner(
                module, example,
                importance=tp.importance.GroupMagnitudeImportance(p=1 if spec.importance is Importance.L1 else 2),
                pruning_ratio=spec.amount, global_pruning=spec.global_ranking,
                round_to=spec.round_to, ignored_layers=ignored,
            )
            pruner.step()
        except Exception as exc:  # an architecture the dependency graph cannot follow
            raise PassError(f"Torch-Pruning could not prune this architecture: {type(exc).__name__}: {str(exc)[:300]}") from None
        after = sum(p.numel() for p in module.parameters())
        if after == before:
            raise PassError("nothing was pruned: no prunable channels outside the output and ignored layers")
        ctx.log(f"{before:,} → {after:,} parameters ({1 - after / before:.1%} removed)")

        if spec.distillation is not None:
            loss = distillation_loss(teacher, ctx.task, spec.distillation.temperature, spec.distillation.alpha)
        else:
            loss = fine_tuning_loss(ctx.task, reference=teacher)
        train(module, ctx, spec.fine_tuning, loss, what="fine-tuning after structured pruning")

        output = ctx.output_dir / "model.pt"
        torch.jit.save(to_torchscript(module.eval(), example), str(output))
        return ModelFile(output, ModelFormat.TORCH_SCRIPT, model.precision)
