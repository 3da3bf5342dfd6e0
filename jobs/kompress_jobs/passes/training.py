"""Training loops the network-changing passes share: fine-tuning on the train split, and
distillation from a teacher. Deterministic for a given seed; torch is imported by the callers."""

from __future__ import annotations

import math
from typing import Callable

from ..errors import PassError
from ..schema import FineTuning, TaskType
from .base import PassContext


def train_split(ctx: PassContext, what: str):
    if ctx.dataset.train is None or len(ctx.dataset.train.inputs) == 0:
        raise PassError(f"{what} needs a train split (x_train / y_train in the data file)")
    return ctx.dataset.train


def task_loss(task: TaskType):
    import torch.nn.functional as F

    if task is TaskType.CLASSIFICATION:
        return lambda output, labels: F.cross_entropy(output, labels.long())
    return lambda output, labels: F.mse_loss(output.reshape(labels.shape), labels.float())


def distillation_loss(teacher, task: TaskType, temperature: float, alpha: float) -> Callable:
    """loss(student, inputs, labels): alpha · soft loss to the teacher + (1 - alpha) · task loss.

    Classification follows Hinton et al.: KL of temperature-softened distributions, scaled by T²
    to keep its gradients comparable to the task loss; regression matches the teacher's outputs."""
    import torch
    import torch.nn.functional as F

    hard_loss = task_loss(task)
    teacher.eval()

    def loss(module, inputs, labels):
        with torch.no_grad():
            target = teacher(inputs)
        output = module(inputs)
        if task is TaskType.CLASSIFICATION:
            soft = F.kl_div(F.log_softmax(output / temperature, -1), F.log_softmax(target / temperature, -1),
                            log_target=True, reduction="batchmean") * temperature ** 2
        else:
            soft = F.mse_loss(output, target)
        return alpha * soft + (1 - alpha) * hard_loss(output, labels)

    return loss


def train(module, ctx: PassContext, settings: FineTuning, loss: Callable, after_step: Callable[[], None] = lambda: None,
          what: str = "fine-tuning") -> None:
    """Adam over the train split for settings.epochs epochs; loss(module, inputs, labels) -> scalar."""
    import torch

    if settings.epochs == 0:
        return
    split = train_split(ctx, what)
    torch.manual_seed(settings.seed)
    torch.set_num_threads(max(ctx.threads, 1))
    inputs, labels = torch.from_numpy(split.inputs), torch.from_numpy(split.labels)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=settings.learning_rate)
    generator = torch.Generator().manual_seed(settings.seed)
    batches = math.ceil(len(inputs) / settings.batch_size)
    module.train()
    for epoch in range(settings.epochs):
        order = torch.randperm(len(inputs), generator=generator)
        total = 0.0
        for b in range(batches):
            index = order[b * settings.batch_size:(b + 1) * settings.batch_size]
            value = loss(module, inputs[index], labels[index])
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
