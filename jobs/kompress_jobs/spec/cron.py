"""Cron schedules as a CronJob reads them (croniter parses; times are UTC): whether a spec's
schedule is valid, and which scheduled time, if any, is due now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


def check_schedule(schedule: str) -> str:
    """The schedule, or ValueError saying what a valid one looks like."""
    from croniter import croniter

    schedule = schedule.strip()
    if schedule.startswith("TZ=") or schedule.startswith("CRON_TZ="):
        raise ValueError(f"{schedule!r}: time zones in the schedule are not supported (schedules are UTC)")
    if not croniter.is_valid(schedule) or len(schedule.split()) not in (1, 5):
        raise ValueError(f"{schedule!r} is not a cron expression: five fields (minute hour day-of-month month "
                         "day-of-week, e.g. '0 3 * * *') or a macro such as @daily")
    return schedule


@dataclass(frozen=True)
class Due:
    at: datetime | None  # the scheduled time to run now; None: nothing is due
    missed: int  # scheduled times since `last` that will not run (CronJob runs only the latest)
    skipped: str | None = None  # why a due time does not run (past its starting deadline)
    latest: datetime | None = None  # the latest scheduled time looked at (run or skipped)


def due(schedule: str, last: datetime, now: datetime, starting_deadline_seconds: int | None = None) -> Due:
    """The latest scheduled time after `last` and not after `now`, as a CronJob controller picks it."""
    from croniter import croniter

    times = croniter(schedule, last)
    latest, count = None, 0
    while count < 1000:  # beyond that, how many were missed no longer matters
        candidate = times.get_next(datetime)
        if candidate > now:
            break
        latest, count = candidate, count + 1
    if latest is None:
        return Due(None, 0)
    if starting_deadline_seconds is not None and now - latest > timedelta(seconds=starting_deadline_seconds):
        return Due(None, count, f"the run due at {latest:%Y-%m-%dT%H:%M:%SZ} is past its starting deadline "
                                f"({starting_deadline_seconds}s)", latest)
    return Due(latest, count - 1, latest=latest)


def next_time(schedule: str, after: datetime) -> datetime:
    from croniter import croniter

    return croniter(schedule, after).get_next(datetime)
