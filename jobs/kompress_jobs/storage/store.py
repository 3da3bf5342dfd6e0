"""Where inputs come from and artifacts go: a local directory (the embedded default) or S3.

S3 goes through boto3 with an optional endpoint_url, so MinIO, Ceph or AWS work unchanged;
credentials come from the standard AWS environment variables / config chain.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath

from ..errors import StoreError
from ..spec.uris import is_s3, split_s3
from .layout import local_path, safe_key


class ArtifactStore(ABC):
    """A folder of runs. Keys are relative paths under the store's root."""

    @abstractmethod
    def check_writable(self) -> None:
        """Fail fast (StoreError) before any work when the store cannot take artifacts."""

    @abstractmethod
    def put(self, local: Path, key: str) -> None: ...

    @abstractmethod
    def get(self, key: str, local: Path) -> bool:
        """Download key to local; False when there is no such key."""

    @abstractmethod
    def delete(self, keys: list[str]) -> None: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys under a folder (prefix ending in /), recursively."""

    @abstractmethod
    def under(self, prefix: str) -> "ArtifactStore":
        """The same store rooted at a folder of this one."""

    @abstractmethod
    def uri(self, key: str) -> str: ...


class LocalStore(ArtifactStore):
    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        """The file of a key, which never leaves the root (no '..', no absolute keys, no links)."""
        return local_path(self.root, key) if key else self.root

    def check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".kompress-probe-"):
                pass
        except OSError as exc:
            raise StoreError(f"artifact directory {self.root}: not writable ({exc.strerror or exc})") from None

    def put(self, local: Path, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        shutil.copyfile(local, partial)
        os.replace(partial, target)  # a reader never sees half a file

    def get(self, key: str, local: Path) -> bool:
        source = self._path(key)
        if not source.is_file():
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, local)
        return True

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        for key in keys:  # remove folders the run left empty
            parent = self._path(key).parent
            while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    def list(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        if not folder.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in folder.rglob("*")
                      if p.is_file() and not p.name.endswith(".partial"))

    def under(self, prefix: str) -> "LocalStore":
        return LocalStore(self._path(prefix.rstrip("/")))

    def uri(self, key: str) -> str:
        return str(self._path(key).resolve())


class S3Store(ArtifactStore):
    # botocore's "standard" retries: exponential backoff with jitter on connection errors,
    # throttling and 5xx, so a store that blips for a few seconds does not fail a long run.
    ATTEMPTS = 5

    def __init__(self, uri: str, endpoint_url: str | None = None, region: str | None = None):
        import boto3
        from botocore.config import Config

        self.bucket, prefix = split_s3(uri)
        self.prefix = prefix.rstrip("/")
        self.endpoint_url, self.region = endpoint_url, region
        config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": self.ATTEMPTS, "mode": "standard"})
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)

    def _key(self, key: str) -> str:
        if not key:
            return self.prefix
        safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def check_writable(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"s3://{self.bucket}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            raise StoreError(f"artifact store {where}: bucket not accessible ({code})") from None
        except BotoCoreError as exc:
            raise StoreError(f"artifact store {where}: unreachable ({exc})") from None

    def put(self, local: Path, key: str) -> None:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.upload_file(str(local), self.bucket, self._key(key))
        except ClientError as exc:  # an answer (denied, no bucket): retrying would not change it
            raise StoreError(f"upload of {key} to s3://{self.bucket} failed: {exc}") from None
        except (BotoCoreError, S3UploadFailedError) as exc:
            where = f" at {self.endpoint_url}" if self.endpoint_url else ""
            raise StoreError(f"upload of {key} to s3://{self.bucket}{where} failed "
                             f"(retried up to {self.ATTEMPTS} times with backoff): {exc}") from None

    def get(self, key: str, local: Path) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, self._key(key), str(local))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StoreError(f"download of {key} from s3://{self.bucket} failed: {exc}") from None
        except BotoCoreError as exc:
            raise StoreError(f"download of {key} from s3://{self.bucket} failed: {exc}") from None
        return True

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": self._key(k)} for k in keys[start : start + 1000]]
            if chunk:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})

    def list(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        start = len(self.prefix) + 1 if self.prefix else 0
        folder = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")  # never a sibling's keys
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder)
            return sorted(item["Key"][start:] for page in pages for item in page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"listing s3://{self.bucket}/{folder} failed: {exc}") from None

    def under(self, prefix: str) -> "S3Store":
        return S3Store(f"s3://{self.bucket}/{self._key(prefix.rstrip('/'))}", self.endpoint_url, self.region)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def open_store(uri: str, endpoint_url: str | None = None, region: str | None = None) -> ArtifactStore:
    if is_s3(uri):
        return S3Store(uri, endpoint_url, region)
    return LocalStore(Path(uri).expanduser())


def fetch_input(uri: str, scratch: Path, endpoint_url: str | None = None, region: str | None = None) -> Path:
    """A local path for a model or data URI, downloading s3:// objects into scratch."""
    if not is_s3(uri):
        return Path(uri).expanduser()
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(uri)
    target = local_path(scratch / "inputs", PurePosixPath(key).name, f"{uri}: the object name")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        boto3.client("s3", endpoint_url=endpoint_url, region_name=region).download_file(bucket, key, str(target))
    except ClientError as exc:
        raise StoreError(f"{uri}: cannot download ({exc.response.get('Error', {}).get('Code', exc)})") from None
    except BotoCoreError as exc:
        raise StoreError(f"{uri}: cannot download ({exc})") from None
    return target


def fetch_directory(uri: str, scratch: Path, endpoint_url: str | None = None, region: str | None = None) -> Path:
    """A local copy of every object under an s3:// prefix (a checkpoint directory)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3(uri)
    prefix = prefix.rstrip("/") + "/"
    target = local_path(scratch / "inputs", PurePosixPath(prefix).name or bucket, f"{uri}: the prefix")
    client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
    try:
        keys = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for item in page.get("Contents", [])]
        # a key ending in '/' is a console's folder marker, not a file
        files = [key for key in keys if not key.endswith("/")]
        if not files:
            raise StoreError(f"{uri}: no objects under this prefix")
        # every local path first: a crafted key ('..', a leading '/', '//') fails the input before anything is written
        locals_ = [local_path(target, key[len(prefix):], f"{uri}: object") for key in files]
        for key, local in zip(files, locals_):
            local.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(local))
    except ClientError as exc:
        raise StoreError(f"{uri}: cannot download ({exc.response.get('Error', {}).get('Code', exc)})") from None
    except BotoCoreError as exc:
        raise StoreError(f"{uri}: cannot download ({exc})") from None
    return target
