"""The shared study of a parallel tuning run: Optuna's RDB storage on PostgreSQL, with heartbeats.

A trial whose Pod died stops sending heartbeats; after three missed beats any worker marks it
failed and queues a retry of its parameters (Optuna's heartbeat-stale callback), so a lost Pod
costs one trial, not the study. Errors never show the URL's credentials: only host, port and
database are named.
"""

from __future__ import annotations

import hashlib
import random
import time
import warnings

from ..errors import StudyStorageError, StudyStorageUnsupported

# The job image carries psycopg (3), SQLAlchemy's default for postgresql://; other databases would
# need their own driver and testing.
SUPPORTED_SCHEMES = ("postgresql", "postgresql+psycopg")
MISSED_HEARTBEATS = 3  # silence, in heartbeats, after which a running trial counts as dead
CONNECT_TIMEOUT_SECONDS = 10
SCHEMA_RACE_ATTEMPTS = 5


def where(url: str) -> str:
    """host:port/database of a URL, without user or password (for messages and reports)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - an unparsable URL must not be echoed: it may hold a password
        return "an unparsable URL"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def check_url(url: str) -> None:
    from sqlalchemy.engine import make_url

    try:
        scheme = make_url(url).drivername
    except Exception:  # noqa: BLE001
        raise StudyStorageUnsupported("the study storage URL cannot be parsed: expected postgresql://user:password@host:5432/database") from None
    if scheme not in SUPPORTED_SCHEMES:
        raise StudyStorageUnsupported(f"the study storage URL's scheme {scheme!r} is not supported: use postgresql:// "
                                      f"(one of {', '.join(SUPPORTED_SCHEMES)})")


def open_storage(url: str, heartbeat_seconds: int):
    """Optuna's RDBStorage on `url`, reachable now, with heartbeats and retries of dead trials."""
    check_url(url)
    for attempt in range(1, SCHEMA_RACE_ATTEMPTS + 1):
        try:
            return _rdb_storage(url, heartbeat_seconds)
        except Exception as exc:  # sqlalchemy's OperationalError and kin: the driver's text, without the URL
            cause = _cause(exc, url)
            # Workers starting together on a fresh database race to create Optuna's tables; the
            # losers see "already exists" and find the tables there on the next try.
            if "already exists" in cause and attempt < SCHEMA_RACE_ATTEMPTS:
                time.sleep(random.uniform(0.2, 1.0))
                continue
            raise StudyStorageError(f"cannot use the study database at {where(url)}: {cause}") from None


class TrialSlot:
    """A PostgreSQL advisory lock, study-wide, held from "is there room for a trial?" until the
    trial exists: without it two workers that both see one trial left would both start one.
    Session-level, so a worker that dies holding it frees it with its connection."""

    def __init__(self, storage, study_name: str):
        # 64 bits of the whole name (namespace, resource, study): studies of two teams never share a lock
        self.engine = storage.engine
        self.key = int.from_bytes(hashlib.blake2b(study_name.encode(), digest_size=8).digest(), "big", signed=True)
        self.connection = None

    def acquire(self) -> None:
        from sqlalchemy import text

        self.connection = self.engine.connect()
        self.connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self.key})

    def release(self) -> None:
        """Idempotent: called as the trial starts, and again after it in case it never started."""
        from sqlalchemy import text

        if self.connection is not None:
            connection, self.connection = self.connection, None
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            connection.close()


def _rdb_storage(url: str, heartbeat_seconds: int):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: "experimental" since 2.9
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=heartbeat_seconds, grace_period=MISSED_HEARTBEATS * heartbeat_seconds,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
            engine_kwargs={"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS}},
        )


def _cause(exc: Exception, url: str) -> str:
    cause = exc
    while cause.__cause__ is not None or getattr(cause, "orig", None) is not None:
        cause = getattr(cause, "orig", None) or cause.__cause__
    text = " ".join(str(cause).split())[:300] or type(cause).__name__
    from sqlalchemy.engine import make_url

    password = make_url(url).password
    return text.replace(str(password), "***") if password else text
