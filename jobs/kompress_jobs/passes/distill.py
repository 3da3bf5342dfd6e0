"""Knowledge distillation: a smaller student (a TorchScript archive named in the spec) learns from
the input model (the teacher) — temperature-softened KL to the teacher's outputs, mixed with the
task loss on the labels."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..errors import ModelLoadError, PassError
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat, ModelSource
from .base import OptimizationPass, PassContext, register
from .settings import FineTuning, PassSettings
from .training import distillation_loss, first_output, train, train_split


class DistillPass(PassSettings):
    """Train a smaller student on the teacher's (the input model's) softened outputs and the labels."""

    type: Literal["Distill"]
    student: ModelSource = Field(description="A TorchScript archive with the teacher's input and output shapes "
                                             "(its weights are the starting point).")
    temperature: float = Field(4.0, gt=0, le=100, description="Softens both distributions in the KL term.")
    alpha: float = Field(0.7, ge=0, le=1, description="Weight of the teacher term; 1 - alpha goes to the labels.")
    training: FineTuning = Field(default_factory=lambda: FineTuning(epochs=30, learning_rate=2e-3))

    @field_validator("student")
    @classmethod
    def _trainable_student(cls, student: ModelSource) -> ModelSource:
        if student.format is not ModelFormat.TORCH_SCRIPT:
            raise ValueError("the student must be a TorchScript archive (its weights are trained and saved), "
                             f"not {student.format.value}")
        return student



@register(DistillPass)
class Distill(OptimizationPass):
    technique = "distillation"
    accepts = frozenset({ModelFormat.TORCH_SCRIPT, ModelFormat.TORCH_EXPORT})
    output_format = ModelFormat.TORCH_SCRIPT
    moves_head = True

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        import torch

        from ..runtimes import load_torch_module

        student_spec = self.spec.student  # a TorchScript archive: the schema checks that at validation
        teacher = load_torch_module(model).eval()
        try:
            student = load_torch_module(ModelFile(ctx.fetch(student_spec.uri), ModelFormat.TORCH_SCRIPT))
        except ModelLoadError as exc:
            raise ModelLoadError(f"student: {exc}") from None
        self._check_fit(teacher, student, ctx)

        loss = distillation_loss(teacher, ctx.task, self.spec.temperature, self.spec.alpha)
        train(student, ctx, self.spec.training, loss, what="distillation")
        output = ctx.output_dir / "model.pt"
        torch.jit.save(student, str(output))
        return ModelFile(output, ModelFormat.TORCH_SCRIPT, model.precision)

    @staticmethod
    def _check_fit(teacher, student, ctx: PassContext) -> None:
        """The student must take the teacher's inputs and give outputs of the teacher's shape."""
        import torch

        split = train_split(ctx, "distillation")
        batch = [torch.from_numpy(split.inputs[name][:2]) for name in ctx.input_names]
        with torch.no_grad():
            expected = first_output(teacher(*batch))
            try:
                got = first_output(student(*batch))
            except Exception as exc:
                shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(ctx.input_names, batch))
                raise PassError(f"the student does not take the teacher's inputs ({shapes}): "
                                f"{str(exc).strip().splitlines()[-1][:200]}") from None
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise PassError(f"the student's output {shape} does not match the teacher's {tuple(expected.shape)}")
