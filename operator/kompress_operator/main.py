"""`kompress operator`: run the controller against the current kubeconfig or in-cluster config."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import kopf

from . import webhook
from .handlers import build_registry
from .kube import Kube, load_config
from .lanes import API_THREADS
from .metrics import OperatorMetrics
from .metrics_access import METRICS_PATH, MetricsAccess
from .settings import OperatorSettings

KOPF_CONNECTIONS = 48  # a few long-lived watches plus concurrent patches
# Objects per LIST page at a (re)start. Unpaged, 1,000 queued 256 KiB specs came as one 256 MiB
# response and the operator peaked at 1.1 GiB; a page of 1.4 MiB specs (etcd's largest) is 70 MiB.
LIST_PAGE = 50


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: kompress registers no change-detecting handlers (it reads
    status.observedGeneration), yet Kopf builds an "essence" of every watched object, each Job
    included, by deep-copying it, on every event. Keeps a change handler from working if one is
    ever added (test_operator_registers_no_change_handlers guards that)."""

    def build(self, *, body, extra_fields=None):
        return {}

    def fetch(self, *, body):
        return None

    def store(self, *, body, patch, essence) -> None:
        return None


def configure(registry: kopf.OperatorRegistry, ours: OperatorSettings, kube: Kube) -> None:
    admission = webhook.server(ours, kube) if ours.webhook_port else None

    # A custom registry has none of Kopf's default handlers: log in as the kubernetes client does
    # (in-cluster service account, else the kubeconfig).
    @kopf.on.login(id="login", registry=registry)
    async def login(**kwargs):
        info = kopf.login_via_client(**kwargs)
        if info is None:
            return None
        # Kopf's own session has no connection limit, so a burst of patches opened one TLS
        # connection per request (16 % of the operator's CPU in a 300-resource burst); a bounded
        # pool reuses them. Kopf logs in again (and gets a new session) on a 401.
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=KOPF_CONNECTIONS, ssl=info.as_ssl_context()),
            headers=info.as_http_headers(),
        )
        return kopf.AiohttpSession(aiohttp_session=session, server=info.server, default_namespace=info.default_namespace,
                                   expiration=info.expiration, priority=info.priority)

    @kopf.on.startup(id="settings", registry=registry)
    def kopf_settings(settings: kopf.OperatorSettings, **_):
        # Watch streams that go silent behind load balancers are Kopf's most reported failure:
        # ask the server to end each watch, and give up on the client side a little later.
        settings.watching.server_timeout = ours.watch_server_timeout
        settings.watching.client_timeout = ours.watch_client_timeout
        settings.watching.connect_timeout = 10
        settings.watching.reconnect_backoff = 1.0
        settings.networking.connect_timeout = 10
        settings.networking.request_timeout = ours.api_timeout  # Kopf's own patches, as for Kube's calls
        settings.watching.chunk_size = LIST_PAGE
        # The handlers keep no state of Kopf's in the resource (they read status.observedGeneration).
        settings.persistence.diffbase_storage = NoDiffBase()
        settings.persistence.finalizer = "kompress.io/finalizer"
        # Kopf would post every handler's INFO log line as an Event; the handlers post the
        # transitions themselves, so only Kopf's warnings and errors (handler failures) go out.
        settings.posting.level = logging.WARNING
        settings.execution.max_workers = 16
        settings.peering.priority = ours.peering_priority
        settings.peering.lifetime = ours.peering_lifetime
        if admission is not None:
            settings.admission.server = admission

    if admission is not None:
        @kopf.on.probe(id="webhook", registry=registry)
        def webhook_listening(**_) -> str:
            # /healthz is the readiness probe too: Kopf answers it a few tens of milliseconds before
            # the webhook listens, and a Pod Ready then would join the webhook Service's endpoints
            # while refusing connections (failurePolicy Fail: a refused apply). Permanent: a retry
            # would hold the probe's answer back instead of failing it.
            if not admission.listening:
                raise kopf.PermanentError("the admission webhook is not listening yet")
            return "listening"


def run(settings: OperatorSettings) -> None:
    logging.basicConfig(level=logging.DEBUG if settings.debug else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.debug:  # Kopf says "Handler succeeded" for every watch event; the handlers log transitions
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("kopf.activities.probe").setLevel(logging.WARNING)  # "succeeded" at every probe
    load_config(connections=API_THREADS)
    metrics = OperatorMetrics()
    kube = Kube(timeout=settings.api_timeout)
    access = None if settings.metrics_access == "Open" else MetricsAccess(
        kube.review_token, lambda user: kube.user_may_get_path(user, METRICS_PATH))
    metrics.serve(settings.metrics_port, settings.metrics_host, access)
    registry = build_registry(settings, kube, metrics)
    configure(registry, settings, kube)
    namespaces = list(settings.namespaces)

    async def operate() -> None:
        await kopf.operator(
            registry=registry,
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=settings.peering is None,
            peering_name=settings.peering,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        )

    asyncio.run(operate())
