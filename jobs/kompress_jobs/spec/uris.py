"""Where a spec points: an S3 URI (s3://bucket/prefix) or a local path."""

from __future__ import annotations

from urllib.parse import urlparse

from ..errors import StoreError


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise StoreError(f"{uri}: an S3 URI needs a bucket (s3://bucket/prefix)")
    return parsed.netloc, parsed.path.lstrip("/")
