"""`kompress operator` with a clock on its own watch, for benchmarks/scale.py only.

    operator_clock.py SEEN_LOG operator [flags...]

Writes "namespace name wall-time" to SEEN_LOG when the operator's watch stream first delivers
each ModelOptimization (decoded, before Kopf queues it to a handler): the moment from which the
issue's goal counts ("creation → Job once the operator sees the resource"). A watch in another
process is no such clock: under load it is itself served late or early. Nothing here changes
what the operator does.
"""

from __future__ import annotations

import sys
import time

from kopf._cogs.clients import watching

from kompress.cli import main
from kompress_jobs.spec.schema import PLURAL


def stamp_first_sightings(seen_log) -> None:
    original = watching.infinite_watch
    seen: set[tuple[str, str]] = set()

    async def infinite_watch(*, resource, **kwargs):
        async for raw_event in original(resource=resource, **kwargs):
            # ADDED, or None when listed; not BOOKMARK, whose object is a bare resourceVersion
            if resource.plural == PLURAL and isinstance(raw_event, dict) and raw_event.get("type") in ("ADDED", None):
                meta = raw_event["object"]["metadata"]
                key = (meta["namespace"], meta["name"])
                if key not in seen:
                    seen.add(key)
                    seen_log.write(f"{key[0]} {key[1]} {time.time()}\n")
            yield raw_event

    watching.infinite_watch = infinite_watch  # Kopf looks it up on the module at each (re)start


if __name__ == "__main__":
    stamp_first_sightings(open(sys.argv[1], "a", buffering=1))
    sys.exit(main(sys.argv[2:]))
