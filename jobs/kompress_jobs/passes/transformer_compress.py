"""Structured compression of a Hugging Face encoder: fewer attention heads, narrower feed-forward
blocks and optionally fewer layers, then distillation from the uncompressed model.

Importance is measured, not guessed from weights alone: over `importanceSamples` train rows, a
head's score is the mean norm of what it writes into the residual stream (its context vectors
through its slice of the attention output projection), a feed-forward neuron's the mean magnitude
of its activation times the norm of its output weights (under the attention mask, both). The
lowest-scoring heads and neurons of every layer go, the same count in each, and the model is
physically smaller: the Linear layers are sliced. Distillation then trains the smaller model to
reproduce the teacher's outputs on the train split (a label-free task needs no labels) and, with
`hiddenStateWeight`, each kept layer's hidden states those of the teacher layer it stands for
(TinyBERT's intermediate-layer matching: much more signal per sentence than one pooled vector,
which is what recovers fidelity when whole layers go). The result is exported to ONNX FP32, so the
quantization passes can follow.
"""

from __future__ import annotations

import copy
from typing import Literal

from pydantic import Field

from ..errors import PassError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .base import OptimizationPass, PassContext, register
from .settings import Distillation, FineTuning, PassSettings
from .training import distillation_loss, train, train_split


class TransformerCompressPass(PassSettings):
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



def encoder_layers(model) -> list:
    """The BERT-family layers (encoder.layer[i] with attention.self, attention.output, intermediate, output)."""
    base = getattr(model, "base_model", model)
    layers = list(getattr(getattr(base, "encoder", None), "layer", []) or [])
    needed = ("attention", "intermediate", "output")
    if not layers or not all(hasattr(layer, part) for layer in layers for part in needed) or not hasattr(layers[0].attention, "self"):
        raise PassError(f"TransformerCompress takes BERT-family encoders (encoder.layer[i].attention.self / intermediate / output); "
                        f"{type(model).__name__} is not one")
    return layers


def measure_importance(task_model, layers, inputs: list, mask) -> tuple[list, list]:
    """Per layer: head scores (num_heads) and neuron scores (intermediate width), averaged over real tokens."""
    import torch

    weights = (mask.unsqueeze(-1).float() if mask is not None else None)
    heads, neurons, hooks = [None] * len(layers), [None] * len(layers), []

    def average(values):  # (batch, sequence, n) → n, over the tokens the mask keeps
        if weights is None:
            return values.mean(dim=(0, 1))
        return (values * weights).sum(dim=(0, 1)) / weights.sum().clamp(min=1)

    for index, layer in enumerate(layers):
        attention = layer.attention.self
        head_size = attention.attention_head_size
        out_weight = layer.attention.output.dense.weight  # (hidden, heads · head_size)

        def on_context(module, args, output, index=index, head_size=head_size, out_weight=out_weight):
            context = output[0] if isinstance(output, tuple) else output  # (batch, sequence, heads · head_size)
            batch, sequence, _ = context.shape
            per_head = context.view(batch, sequence, -1, head_size)
            projected = torch.einsum("bshd,ohd->bsho", per_head, out_weight.view(out_weight.shape[0], -1, head_size))
            heads[index] = average(projected.norm(dim=-1))

        def on_intermediate(module, args, output, index=index, layer=layer):
            column_norms = layer.output.dense.weight.norm(dim=0)  # (intermediate,)
            neurons[index] = average(output.abs()) * column_norms

        hooks += [attention.register_forward_hook(on_context), layer.intermediate.register_forward_hook(on_intermediate)]
    try:
        with torch.no_grad():
            task_model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return heads, neurons


def _slice_linear(linear, keep, dim: int):
    """A Linear keeping `keep` output rows (dim 0) or input columns (dim 1)."""
    import torch

    weight = linear.weight.detach().index_select(dim, keep)
    sliced = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None)
    sliced.weight.data.copy_(weight)
    if linear.bias is not None:
        sliced.bias.data.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach().index_select(0, keep))
    return sliced


def prune_heads(layer, keep_heads) -> None:
    import torch

    attention = layer.attention.self
    size = attention.attention_head_size
    rows = torch.cat([torch.arange(h * size, (h + 1) * size) for h in keep_heads.tolist()])
    for name in ("query", "key", "value"):
        setattr(attention, name, _slice_linear(getattr(attention, name), rows, 0))
    layer.attention.output.dense = _slice_linear(layer.attention.output.dense, rows, 1)
    attention.num_attention_heads = len(keep_heads)  # the forward splits heads by head size
    attention.all_head_size = len(keep_heads) * size


def prune_neurons(layer, keep) -> None:
    layer.intermediate.dense = _slice_linear(layer.intermediate.dense, keep, 0)
    layer.output.dense = _slice_linear(layer.output.dense, keep, 1)


def with_hidden_states(output_loss, teacher, student, teacher_layers: list[int], input_names, weight: float):
    """(loss, hooks): output_loss + weight · mean over kept layers of the masked squared error between
    the student layer's hidden states and its teacher layer's, relative to the teacher's (scale-free).
    The hooks capture the layers' outputs; remove them when training is over."""
    import torch

    captured = {"teacher": {}, "student": {}}

    def capture(side, index):
        def hook(module, args, output):
            captured[side][index] = output[0] if isinstance(output, tuple) else output
        return hook

    hooks = [layer.register_forward_hook(capture("teacher", i)) for i, layer in enumerate(encoder_layers(teacher.model))]
    hooks += [layer.register_forward_hook(capture("student", i)) for i, layer in enumerate(encoder_layers(student.model))]
    mask_at = input_names.index("attention_mask") if "attention_mask" in input_names else None

    def loss(module, inputs, labels):
        value = output_loss(module, inputs, labels)  # runs teacher (no grad) and student: fills `captured`
        weights = None if mask_at is None else inputs[mask_at].unsqueeze(-1).float()
        terms = []
        for student_index, teacher_index in enumerate(teacher_layers):
            mine, target = captured["student"][student_index], captured["teacher"][teacher_index].detach()
            error, scale = (mine - target) ** 2, target ** 2
            if weights is not None:
                error, scale = error * weights, scale * weights
            terms.append(error.sum() / scale.sum().clamp(min=1e-9))
        return value + weight * torch.stack(terms).mean()

    return loss, hooks


def kept(scores, amount: float):
    """Indices of the highest scores after removing round(amount · n), in their original order."""
    import torch

    remove = int(round(amount * len(scores)))
    return torch.sort(torch.topk(scores, len(scores) - remove).indices).values


@register(TransformerCompressPass)
class TransformerCompress(OptimizationPass):
    technique = "structured-compression"
    accepts = frozenset({ModelFormat.HUGGING_FACE})
    moves_head = True

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        import torch

        from ..huggingface import load_task_model
        from .export import export_module

        spec = self.spec
        teacher = load_task_model(model.path, model.options, ctx.input_names)
        student = copy.deepcopy(teacher)
        layers = encoder_layers(student.model)
        self._check_amounts(layers)

        split = train_split(ctx, "TransformerCompress")
        rows = [torch.from_numpy(split.inputs[name][:spec.importance_samples]) for name in ctx.input_names]
        mask = rows[ctx.input_names.index("attention_mask")] if "attention_mask" in ctx.input_names else None
        head_scores, neuron_scores = measure_importance(student, layers, rows, mask)
        before = sum(p.numel() for p in student.parameters())
        for layer, heads, neurons in zip(layers, head_scores, neuron_scores):
            if spec.head_amount:
                prune_heads(layer, kept(heads, spec.head_amount))
            if spec.ffn_amount:
                prune_neurons(layer, kept(neurons, spec.ffn_amount))
        teacher_layers = list(range(len(layers)))
        if spec.keep_layers is not None:
            teacher_layers = self._keep_layers(student.model, layers)
        after = sum(p.numel() for p in student.parameters())
        ctx.log(f"{before:,} → {after:,} parameters: {self._shape(student.model)}")

        loss = distillation_loss(teacher, ctx.task, spec.distillation.temperature, spec.distillation.alpha)
        hooks = []
        if spec.hidden_state_weight:
            loss, hooks = with_hidden_states(loss, teacher, student, teacher_layers, ctx.input_names, spec.hidden_state_weight)
        try:
            train(student, ctx, spec.training, loss, what="distillation after compression")
        finally:
            for hook in hooks:
                hook.remove()
        output = ctx.output_dir / "model.onnx"
        export_module(student.eval(), ctx, output, spec.opset)
        return ModelFile(output, ModelFormat.ONNX, model.precision)

    def _check_amounts(self, layers) -> None:
        spec = self.spec
        heads = layers[0].attention.self.num_attention_heads
        if int(round(spec.head_amount * heads)) >= heads:
            raise PassError(f"headAmount {spec.head_amount:g} would remove every one of the {heads} attention heads of a layer")
        width = layers[0].intermediate.dense.out_features
        if int(round(spec.ffn_amount * width)) >= width:
            raise PassError(f"ffnAmount {spec.ffn_amount:g} would remove every feed-forward neuron of a layer")
        if spec.keep_layers is not None and spec.keep_layers > len(layers):
            raise PassError(f"keepLayers {spec.keep_layers} is more than the model's {len(layers)} layers")

    def _keep_layers(self, model, layers) -> list[int]:
        """Keeps `keepLayers` evenly spaced layers; returns the teacher index of each."""
        import torch

        count = self.spec.keep_layers
        chosen = sorted({round(i * (len(layers) - 1) / max(count - 1, 1)) for i in range(count)})
        base = getattr(model, "base_model", model)
        base.encoder.layer = torch.nn.ModuleList([layers[i] for i in chosen])
        model.config.num_hidden_layers = len(chosen)
        return chosen

    @staticmethod
    def _shape(model) -> str:
        layers = encoder_layers(model)
        return (f"{len(layers)} layers, {layers[0].attention.self.num_attention_heads} heads, "
                f"{layers[0].intermediate.dense.out_features} feed-forward neurons each")
