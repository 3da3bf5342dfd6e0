"""The digest of a spec's model, to notice when it changes: an S3 object's ETag (a checkpoint
prefix: a digest over its objects' keys and ETags).

S3 is read with the operator's own credentials (its environment, IRSA, or the chart's
reoptimize.credentialsSecretName): HeadObject and ListBucket on the model's location, nothing more,
and only where the namespace's storage policy allows (locations.digest_readable, checked by the
caller). Calls are bounded: short timeouts, two attempts, at most MAX_OBJECTS listed. Local paths
are never read: they would be the operator's own files, not the Job's."""

from __future__ import annotations

import hashlib
import threading

from kompress_jobs.formats import format_of
from kompress_jobs.spec.schema import ModelOptimizationSpec
from kompress_jobs.spec.uris import is_s3, split_s3

MAX_OBJECTS = 10_000  # a checkpoint prefix holds tens of files, not a bucket's worth


class DigestUnavailable(Exception):
    """The operator cannot read the model's digest (no such object, no access)."""


class ModelDigests:
    def __init__(self):
        self._clients: dict[tuple[str | None, str | None], object] = {}  # one per endpoint: each costs ~0.05 s to make
        self._lock = threading.Lock()

    def of(self, spec: ModelOptimizationSpec) -> str:
        """Blocking (S3 calls): run it in a thread."""
        uri = spec.model.uri
        if not is_s3(uri):
            raise DigestUnavailable(f"{uri}: the operator reads model digests only from S3")
        return self._s3(uri, format_of(spec.model.format).folder(), spec.artifacts.endpoint_url, spec.artifacts.region)

    def _s3(self, uri: str, prefix: bool, endpoint_url: str | None, region: str | None) -> str:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        with self._lock:  # checks run in threads; a boto3 client is thread-safe, making one is not
            client = self._clients.get((endpoint_url, region))
            if client is None:
                client = self._clients[(endpoint_url, region)] = boto3.client(
                    "s3", endpoint_url=endpoint_url, region_name=region,
                    config=Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"}))
        try:
            if not prefix:
                return "etag:" + client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
            items = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key.rstrip("/") + "/"):
                items += page.get("Contents", [])
                if len(items) > MAX_OBJECTS:
                    raise DigestUnavailable(f"{uri}: more than {MAX_OBJECTS} objects under this prefix")
            listing = "".join(f"{item['Key']}\0{item['ETag']}\n" for item in items)
        except ClientError as exc:
            raise DigestUnavailable(f"{uri}: {exc.response.get('Error', {}).get('Code', exc)}") from None
        except BotoCoreError as exc:
            raise DigestUnavailable(f"{uri}: {exc}") from None
        if not listing:
            raise DigestUnavailable(f"{uri}: no objects under this prefix")
        return "etags:" + hashlib.sha256(listing.encode()).hexdigest()

