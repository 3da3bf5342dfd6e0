"""Who may read /metrics: whoever the cluster says may `get` the non-resource URL /metrics, as
controller-runtime's secure metrics serving (WithAuthenticationAndAuthorization) and
kube-rbac-proxy decide it. The bearer token is checked with a TokenReview, its user with a
SubjectAccessReview; both answers are kept for a minute, so a scraper every 15 s costs the API
server two calls a minute. An API server that does not answer refuses the scrape (fail closed,
nothing kept). The metrics name every team's resources, picks and latencies: without this, any
Pod in the cluster could read them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
KEEP_SECONDS = 60.0
MAX_KEPT = 1024  # distinct tokens remembered; a flood of fresh tokens cannot grow memory without bound

TokenReview = Callable[[str], dict | None]  # token -> the user it authenticates, or None
AccessReview = Callable[[dict], bool]  # user -> may get /metrics


class MetricsAccess:
    def __init__(self, review_token: TokenReview, may_read: AccessReview, keep_seconds: float = KEEP_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.review_token, self.may_read, self.keep_seconds, self.clock = review_token, may_read, keep_seconds, clock
        self._kept: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def decide(self, authorization: str | None) -> int:
        """The HTTP status a request with this Authorization header gets: 200, 401 or 403 (503
        when the API server cannot be asked)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return 401
        token = token.strip()
        now = self.clock()
        with self._lock:
            kept = self._kept.get(token)
        if kept and now - kept[0] < self.keep_seconds:
            return kept[1]
        try:
            user = self.review_token(token)
            status = 401 if user is None else (200 if self.may_read(user) else 403)
        except Exception as exc:  # noqa: BLE001 - the API server away or refusing: refuse, keep nothing
            log.warning("could not review a metrics scrape's token: %s", exc)
            return 503
        with self._lock:
            if len(self._kept) >= MAX_KEPT:
                self._kept.clear()
            self._kept[token] = (now, status)
        return status


def guarded_app(app, access: MetricsAccess):
    """The metrics WSGI app behind `access`."""
    reasons = {401: "401 Unauthorized", 403: "403 Forbidden", 503: "503 Service Unavailable"}

    def guarded(environ, start_response):
        status = access.decide(environ.get("HTTP_AUTHORIZATION"))
        if status == 200:
            return app(environ, start_response)
        headers = [("Content-Type", "text/plain")] + ([("WWW-Authenticate", 'Bearer realm="kompress"')] if status == 401 else [])
        start_response(reasons[status], headers)
        return [f"{reasons[status]}: {METRICS_PATH} needs a bearer token whose user may get it\n".encode()]
    return guarded


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - wsgiref's signature
        pass


def serve(registry: CollectorRegistry, port: int, address: str, access: MetricsAccess | None) -> ThreadingWSGIServer:
    """The metrics endpoint in a daemon thread; open to all when access is None."""
    app = make_wsgi_app(registry)
    server = make_server(address, port, guarded_app(app, access) if access else app, ThreadingWSGIServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
