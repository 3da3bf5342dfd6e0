"""Unstructured magnitude pruning of a TorchScript model, with masked fine-tuning."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..errors import PassError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import OptimizationPass, PassContext, register
from .settings import FineTuning, PassSettings
from .training import fine_tuning_loss, train


class PrunePass(PassSettings):
    """Unstructured magnitude pruning: the smallest weights of Linear and Conv layers (ranked across
    all of them) become zeros, kept at zero while fine-tuning recovers accuracy. Dense kernels do not
    run faster on zeros; the candidate is smaller only compressed (the report says so)."""

    type: Literal["Prune"]
    amount: float = Field(0.5, gt=0, lt=1, description="Fraction of the weights to remove, in (0, 1).")
    fine_tuning: FineTuning = Field(default_factory=FineTuning)



def prunable_weights(module) -> list:
    """Weights of Linear and Conv layers: the matrices/kernels (dim ≥ 2) named `weight`, not biases or norms."""
    return [p for name, p in module.named_parameters() if name.endswith("weight") and p.dim() >= 2]


def global_magnitude_masks(weights: list, amount: float) -> list:
    """Masks that drop the `amount` smallest weights by |value|, ranked across all layers together
    (layers with many small weights give up more than a uniform per-layer cut would)."""
    import torch

    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
    cut = int(amount * magnitudes.numel())
    if cut == 0:
        return [torch.ones_like(w, dtype=torch.bool) for w in weights]
    threshold = torch.kthvalue(magnitudes, cut).values
    return [w.detach().abs() > threshold for w in weights]


@register(PrunePass)
class Prune(OptimizationPass):
    technique = "pruning"
    accepts = frozenset({ModelFormat.TORCH_SCRIPT})
    output_format = ModelFormat.TORCH_SCRIPT
    moves_head = True

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        import torch

        from ..runtimes import load_torch_module

        module = load_torch_module(model)
        weights = prunable_weights(module)
        if not weights:
            raise PassError("no Linear or Conv weights to prune")
        masks = global_magnitude_masks(weights, self.spec.amount)

        def apply_masks() -> None:
            with torch.no_grad():
                for weight, mask in zip(weights, masks):
                    weight.mul_(mask)

        apply_masks()
        # A label-free task fine-tunes towards the unpruned model's outputs.
        loss = fine_tuning_loss(ctx.task, reference=load_torch_module(model))
        train(module, ctx, self.spec.fine_tuning, loss, after_step=apply_masks, what="fine-tuning after pruning")
        kept = sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
        ctx.log(f"{1 - kept:.1%} of Linear/Conv weights are zero")
        output = ctx.output_dir / "model.pt"
        torch.jit.save(module, str(output))
        return ModelFile(output, ModelFormat.TORCH_SCRIPT, model.precision)
