"""The digest of a spec's model, to notice when it changes: an S3 object's ETag (a checkpoint
prefix: a digest over its objects' keys and ETags), or a local file's SHA-256.

S3 is read with the operator's own credentials (its environment, IRSA, or the chart's
reoptimize.credentialsSecretName): HeadObject and ListBucket on the model's location, nothing more.
A local file is hashed only when its size or modification time changed since the last look."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from kompress_jobs.digest import sha256
from kompress_jobs.schema import ModelFormat, ModelOptimizationSpec
from kompress_jobs.store import is_s3, split_s3


class DigestUnavailable(Exception):
    """The operator cannot read the model's digest (no such object, no access)."""


class ModelDigests:
    def __init__(self):
        self._files: dict[Path, tuple[tuple[int, int], str]] = {}  # path → ((size, mtime), digest)
        self._clients: dict[tuple[str | None, str | None], object] = {}  # one per endpoint: each costs ~0.05 s to make
        self._lock = threading.Lock()

    def of(self, spec: ModelOptimizationSpec) -> str:
        """Blocking (S3 calls, hashing): run it in a thread."""
        uri = spec.model.uri
        if is_s3(uri):
            return self._s3(uri, spec.model.format is ModelFormat.HUGGING_FACE, spec.artifacts.endpoint_url, spec.artifacts.region)
        return self._local(Path(uri).expanduser())

    def _s3(self, uri: str, prefix: bool, endpoint_url: str | None, region: str | None) -> str:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        with self._lock:  # checks run in threads; a boto3 client is thread-safe, making one is not
            client = self._clients.get((endpoint_url, region))
            if client is None:
                client = self._clients[(endpoint_url, region)] = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        try:
            if not prefix:
                return "etag:" + client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
            listing = "".join(f"{item['Key']}\0{item['ETag']}\n"
                              for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key.rstrip("/") + "/")
                              for item in page.get("Contents", []))
        except ClientError as exc:
            raise DigestUnavailable(f"{uri}: {exc.response.get('Error', {}).get('Code', exc)}") from None
        except BotoCoreError as exc:
            raise DigestUnavailable(f"{uri}: {exc}") from None
        if not listing:
            raise DigestUnavailable(f"{uri}: no objects under this prefix")
        return "etags:" + hashlib.sha256(listing.encode()).hexdigest()

    def _local(self, path: Path) -> str:
        try:
            stat = path.stat()
        except OSError as exc:
            raise DigestUnavailable(f"{path}: {exc.strerror} (the operator reads local models only where it runs)") from None
        version = (stat.st_size, stat.st_mtime_ns)
        cached = self._files.get(path)
        if cached and cached[0] == version and not path.is_dir():
            return cached[1]
        digest = "sha256:" + sha256(path)
        self._files[path] = (version, digest)
        return digest
