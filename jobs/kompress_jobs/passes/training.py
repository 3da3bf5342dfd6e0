"""Training loops the network-changing passes share: fine-tuning on the train split, and
distillation from a teacher. Deterministic for a given seed; torch is imported by the callers.

Models take their named inputs positionally, in the order of `ctx.input_names`; a loss is
`loss(module, inputs, labels)` with `inputs` that list of tensors. A label-free task (Fidelity)
trains against a reference model's outputs instead of labels.
"""

from __future__ import annotations

import math
from typing import Callable

from ..errors import PassError
from ..spec.tasks import Task, TaskType
from .base import PassContext
from .settings import FineTuning


def train_split(ctx: PassContext, what: str):
    if ctx.dataset.train is None or len(ctx.dataset.train) == 0:
        raise PassError(f"{what} needs a train split (x_train in the data file, or rows of split 'train')")
    if ctx.task.needs_labels and ctx.dataset.train.labels is None:
        raise PassError(f"{what} needs labels on the train split (y_train, or data.text.labelColumn) for a {ctx.task.type.value} task")
    return ctx.dataset.train


def first_output(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def task_loss(task: Task):
    import torch.nn.functional as F

    if task.type is TaskType.CLASSIFICATION:
        return lambda output, labels: F.cross_entropy(output, labels.long())
    return lambda output, labels: F.mse_loss(output.reshape(labels.shape), labels.float())


def matching_loss(output, target):
    """Distance to a reference output: 1 − cosine (direction, what embeddings are compared by) plus MSE (scale)."""
    import torch.nn.functional as F

    flat, reference = output.reshape(len(output), -1), target.reshape(len(target), -1)
    return (1 - F.cosine_similarity(flat, reference, dim=-1)).mean() + F.mse_loss(flat, reference)


def fine_tuning_loss(task: Task, reference) -> Callable:
    """Labelled tasks: the task loss. Label-free ones: stay close to `reference`'s outputs."""
    if task.type is TaskType.FIDELITY:
        return distillation_loss(reference, task, temperature=1.0, alpha=1.0)
    hard = task_loss(task)
    return lambda module, inputs, labels: hard(first_output(module(*inputs)), labels)


def distillation_loss(teacher, task: Task, temperature: float, alpha: float) -> Callable:
    """loss(student, inputs, labels): alpha · soft loss to the teacher + (1 − alpha) · task loss.

    Classification follows Hinton et al.: KL of temperature-softened distributions, scaled by T²
    to keep its gradients comparable to the task loss; regression and label-free tasks match the
    teacher's outputs (label-free ones with no task term at all)."""
    import torch
    import torch.nn.functional as F

    hard_loss = None if task.type is TaskType.FIDELITY else task_loss(task)
    teacher.eval()

    def loss(module, inputs, labels):
        with torch.no_grad():
            target = first_output(teacher(*inputs))
        output = first_output(module(*inputs))
        if task.type is TaskType.CLASSIFICATION:
            soft = F.kl_div(F.log_softmax(output / temperature, -1), F.log_softmax(target / temperature, -1),
                            log_target=True, reduction="batchmean") * temperature ** 2
        else:
            soft = matching_loss(output, target) if hard_loss is None else F.mse_loss(output, target)
        if hard_loss is None:
            return soft
        return alpha * soft + (1 - alpha) * hard_loss(output, labels)

    return loss


def train(module, ctx: PassContext, settings: FineTuning, loss: Callable, after_step: Callable[[], None] = lambda: None,
          what: str = "fine-tuning") -> None:
    """Adam over the train split for settings.epochs epochs."""
    import torch

    if settings.epochs == 0:
        return
    split = train_split(ctx, what)
    torch.manual_seed(settings.seed)
    torch.set_num_threads(max(ctx.threads, 1))
    inputs = [torch.from_numpy(split.inputs[name]) for name in ctx.input_names]
    labels = None if split.labels is None else torch.from_numpy(split.labels)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=settings.learning_rate)
    generator = torch.Generator().manual_seed(settings.seed)
    batches = math.ceil(len(split) / settings.batch_size)
    module.train()
    for epoch in range(settings.epochs):
        order = torch.randperm(len(split), generator=generator)
        total = 0.0
        for b in range(batches):
            index = order[b * settings.batch_size:(b + 1) * settings.batch_size]
            value = loss(module, [t[index] for t in inputs], None if labels is None else labels[index])
            if not torch.isfinite(value):
                raise PassError(f"{what} diverged (loss {value.item()}) in epoch {epoch + 1}: lower the learning rate")
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            after_step()
            total += value.item()
        ctx.log(f"epoch {epoch + 1}/{settings.epochs}: loss {total / batches:.4f}")
        if ctx.on_epoch is not None:
            module.eval()
            ctx.on_epoch(epoch + 1, module)
            module.train()
    module.eval()
