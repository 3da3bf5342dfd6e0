"""The base of every object of the ModelOptimization resource, and the bounds every field keeps."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

MAX_STRING = 4096  # an S3 key is at most 1024 bytes; a URI, a pattern or a name fits well within


MAX_ITEMS = 1024  # the longest lists: operator names of a large graph to leave alone


class Model(BaseModel):
    """Base for every object in the resource: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        # Every string is bounded (fields may set a smaller or, with a reason, larger limit), and so
        # is every list and map (max_length on the field): one tenant's spec cannot grow the
        # operator without bound (tests/test_crd.py checks the generated CRD for it).
        str_max_length=MAX_STRING,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in YAML / the API server (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Record(BaseModel):
    """Base of what kompress writes and reads back (report.json, its parts): camelCase, unknown
    fields kept (a record from a newer release still reads), written as set."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def to_wire(self) -> dict[str, Any]:
        """As report.json holds it: what was set, nulls included, nothing added."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
