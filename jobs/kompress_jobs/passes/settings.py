"""What every pass's settings share (name, input), the training settings several passes reuse, and
the one place a pass type is read from its settings class."""

from __future__ import annotations

from enum import Enum

from pydantic import Field

from ..spec.sources import ModelSource
from ..spec.wire import Model


class PassSettings(Model):
    name: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="Unique name of the candidate this pass produces (defaults to the pass type).",
    )
    input: str | None = Field(
        None,
        description="Name of the earlier pass (or 'baseline') whose model this pass takes. "
        "Defaults to the newest model of the chain (see docs/passes.md).",
    )

    def judging_splits(self) -> tuple[str, ...]:
        """Data splits the pass judges its own trials on (the pipeline loads them; none by default)."""
        return ()

    def model_sources(self) -> list[tuple[str, ModelSource]]:
        """(field's wire name, source) of every model the settings name besides the input (a student):
        the operator holds each to the namespace's storage locations (locations.py)."""
        return [(info.alias or field, value) for field, info in type(self).model_fields.items()
                if isinstance(value := getattr(self, field), ModelSource)]


class ComputePrecision(str, Enum):
    """The floating-point type a runtime computes in (FP16 / BF16 pay where the hardware has them)."""

    FP32 = "FP32"
    FP16 = "FP16"
    BF16 = "BF16"

    @property
    def short(self) -> str:
        """As kompress names precisions elsewhere (ModelFile.precision, the report): fp32, fp16, bf16."""
        return self.value.lower()


class FineTuning(Model):
    """Training on the data's train split (classification: cross-entropy; regression: MSE)."""

    epochs: int = Field(3, ge=0, le=1000, description="Passes over the train split; 0 skips training.")
    learning_rate: float = Field(1e-3, gt=0, le=1)
    batch_size: int = Field(64, ge=1, le=65536)
    seed: int = Field(0, ge=0)


class Distillation(Model):
    """Learn from the input model's softened outputs as well as from the labels."""

    temperature: float = Field(4.0, gt=0, le=100, description="Softens both distributions in the KL term.")
    alpha: float = Field(0.7, ge=0, le=1, description="Weight of the teacher term; 1 - alpha goes to the labels.")


def pass_type_of(settings: type[PassSettings]) -> str:
    """The `type` a pass's settings class declares (its Literal): the one place a pass type is written."""
    return settings.model_fields["type"].annotation.__args__[0]
