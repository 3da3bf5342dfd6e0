"""User-facing errors: each carries one line a person can act on.

Anything that is not a KompressError is a bug in kompress and is shown with its traceback.
"""


class KompressError(Exception):
    """An error caused by the input or the environment, not by kompress itself."""

    exit_code = 1
    reason = "PipelineFailed"  # CamelCase, for the resource's Failed condition


class VersionMismatchError(KompressError):
    """The operator and the job image are of releases that cannot read each other's messages or spec."""

    reason = "VersionMismatch"


class SpecError(KompressError):
    """The ModelOptimization spec is invalid; the message names the field path."""

    reason = "InvalidSpec"

    exit_code = 2


class ModelLoadError(KompressError):
    """The model file is missing, corrupt or not in the declared format."""

    reason = "ModelLoadFailed"


class UnsafeModelError(ModelLoadError):
    """The model file would run code (or read files outside itself) if loaded."""

    reason = "UnsafeModel"


class DataError(KompressError):
    """The data file is missing, corrupt, or does not fit the model."""

    reason = "DataInvalid"


class StoreError(KompressError):
    """The artifact store cannot be reached or written."""

    reason = "ArtifactStoreFailed"


class PassError(KompressError):
    """An optimization pass failed on this model."""

    reason = "PassFailed"


class BudgetSpentError(KompressError):
    """spec.budget was spent before any pass could make a candidate."""

    reason = "BudgetTooSmall"


class StudyStorageError(KompressError):
    """The shared study database cannot be used: unreachable, refused, or an unsupported URL."""

    reason = "StudyStorageUnreachable"


class StudyStorageUnsupported(StudyStorageError):
    reason = "StudyStorageUnsupported"


class StudyStorageMissing(StudyStorageError):
    reason = "StudyStorageMissing"


class RuntimeCrashed(KompressError):
    """A runtime run in a process of its own (runtimes/contained.py) died or stopped answering: one
    candidate's failure, never the run's."""

    reason = "RuntimeCrashed"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]

