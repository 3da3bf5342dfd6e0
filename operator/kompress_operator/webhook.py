"""The admission webhook: `kubectl apply` refuses what the operator would refuse later, and what
the requesting user could not do without the operator (the confused-deputy check).

For each create or update of a ModelOptimization:
1. the full pydantic validation (what the CRD's schema cannot express), refused with the field path;
2. the operator-wide policy (policy.py);
3. when the spec decides what its Job runs as or where (image, ServiceAccount, tolerations, node
   selector, priority class, Kueue queue), a SubjectAccessReview on every spec change: the user
   must be allowed to create Jobs in the namespace themselves. Kubernetes lets whoever may create
   Pods or Jobs in a namespace run them as any of its ServiceAccounts (and Kueue in any of its
   LocalQueues), so that one permission is the boundary for all six fields. A spec naming a
   Secret (tuning.storageSecret) needs `get` on that Secret.

A mutating webhook records who last changed the spec (the `kompress.io/author` annotation: user,
uid and groups as the API server authenticated them), so that a scheduled or on-change re-run is
reviewed again for that user (reoptimizer.py); the validating one refuses a request whose recorded
author is not its requester, or that changes the record alone.

Kopf serves both (both replicas do: admission is not paused by peering); the chart renders the
webhook configurations from `configurations()`'s conventions (tests/test_chart.py compares).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import ssl
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import kopf

from kompress_jobs.errors import SpecError
from kompress_jobs.spec.schema import API_GROUP, API_VERSION, PLURAL

from . import policy
from .controller import validate  # the same check the controller runs before it starts a run
from .authors import AUTHOR_ANNOTATION, JOB_CREATE, SECRET_GET, asked_fields, author_annotation, recorded_author
from .lanes import LaneFull
from .settings import OperatorSettings

log = logging.getLogger(__name__)

HANDLER_ID = "validate"  # Kopf routes POST /<handler id> to the handler
AUTHOR_ID = "author"
WEBHOOK_NAME = f"validate.{API_GROUP}"
AUTHOR_WEBHOOK_NAME = f"author.{API_GROUP}"
CONFIGURATION_NAME = API_GROUP  # when the operator registers it itself
# Deliberate: fail closed. With the operator down, creates and spec edits of ModelOptimizations are
# refused (deletes are not matched); otherwise a restart would be a window without the user check,
# which the Job-build policy check cannot replace (the requester is not known there).
FAILURE_POLICY = "Fail"
TIMEOUT_SECONDS = 10  # one SubjectAccessReview: milliseconds when the API server is well
AccessReview = Callable[[dict, str, dict], Awaitable[tuple[bool, str]]]  # (userInfo, namespace, attributes) -> allowed, reason


async def review(new: dict, old: dict | None, user: dict, settings: OperatorSettings, can: AccessReview) -> None:
    """Raise kopf.AdmissionError for a request to refuse; return to admit it."""
    namespace = new["metadata"].get("namespace") or ""
    if settings.namespaces and namespace not in settings.namespaces:
        return  # not this operator's to run
    if old is not None and old.get("spec") == new.get("spec"):
        if recorded_author(old) != recorded_author(new):
            raise kopf.AdmissionError(f"metadata.annotations[{AUTHOR_ANNOTATION}]: kompress records there who last changed the "
                                      "spec; it cannot be changed on its own", code=403)
        return  # metadata only (finalizers, labels): never block the operator, or a deletion
    stamped = (new["metadata"].get("annotations") or {}).get(AUTHOR_ANNOTATION)
    if stamped is not None and stamped != author_annotation(user):
        raise kopf.AdmissionError(f"metadata.annotations[{AUTHOR_ANNOTATION}]: names another user than "
                                  f"{user.get('username') or 'the requesting user'}, who writes this spec; leave it to kompress", code=403)
    try:
        spec = validate(new).spec
    except SpecError as exc:
        raise kopf.AdmissionError(str(exc), code=422) from None
    found = policy.violations(spec, settings, namespace)
    if found:
        raise kopf.AdmissionError("; ".join(map(str, found)), code=403)
    # On every spec change, not only when these fields change: whoever edits a spec whose Job runs
    # as a chosen identity decides what runs under it (its model, its data).
    who = user.get("username") or "the requesting user"
    fields = asked_fields(spec.job)
    if fields:
        allowed, reason = await can(user, namespace, JOB_CREATE)
        if not allowed:
            raise kopf.AdmissionError(
                f"{', '.join(fields)}: a spec that sets {'this field' if len(fields) == 1 else 'these fields'} may only be "
                f"written by a user with permission to create jobs.batch in namespace {namespace}, which {who} does not have"
                + (f" ({reason})" if reason else "") + "; leave it unset to run with the operator's defaults", code=403)
    secret = spec.tuning.storage_secret if spec.tuning else None
    if secret:
        allowed, reason = await can(user, namespace, {**SECRET_GET, "name": secret.name})
        if not allowed:
            raise kopf.AdmissionError(
                f"{policy.TUNING_FIELDS['storage_secret']}: the Job would read Secret {secret.name!r}, which {who} may not "
                f"get in namespace {namespace}" + (f" ({reason})" if reason else ""), code=403)


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings, can: AccessReview) -> None:
    @kopf.on.mutate(API_GROUP, API_VERSION, PLURAL, id=AUTHOR_ID, operations=["CREATE", "UPDATE"], side_effects=False,
                    registry=registry)
    def stamp_author(body, old, userinfo, patch, **_):
        namespace = body.get("metadata", {}).get("namespace") or ""
        if (settings.namespaces and namespace not in settings.namespaces) or (old is not None and old.get("spec") == body.get("spec")):
            return
        patch.metadata.annotations[AUTHOR_ANNOTATION] = author_annotation(dict(userinfo or {}))

    @kopf.on.validate(API_GROUP, API_VERSION, PLURAL, id=HANDLER_ID, operations=["CREATE", "UPDATE"], registry=registry)
    async def validate_resource(body, old, userinfo, **_):
        try:
            await review(dict(body), dict(old) if old is not None else None, dict(userinfo or {}), settings, can)
        except LaneFull as exc:  # a flood of reviews: refuse now rather than time out (failurePolicy Fail)
            raise kopf.AdmissionError(f"the admission webhook is busy ({exc}); apply again in a moment", code=429) from None


def configurations(client_config: dict[str, Any], name: str = CONFIGURATION_NAME) -> list[dict[str, Any]]:
    """The Validating- and MutatingWebhookConfiguration; client_config is a url or a service
    reference (without the handler's path), with caBundle."""
    validating = configuration(_at(client_config, HANDLER_ID), name)
    mutating = configuration(_at(client_config, AUTHOR_ID), name)
    mutating["kind"] = "MutatingWebhookConfiguration"
    mutating["webhooks"][0] |= {"name": AUTHOR_WEBHOOK_NAME, "reinvocationPolicy": "Never"}
    return [validating, mutating]


def _at(client_config: dict[str, Any], path: str) -> dict[str, Any]:
    if "url" in client_config:
        return {**client_config, "url": f"{client_config['url'].rstrip('/')}/{path}"}
    if "service" in client_config:
        return {**client_config, "service": {**client_config["service"], "path": f"/{path}"}}
    return dict(client_config)


def configuration(client_config: dict[str, Any], name: str = CONFIGURATION_NAME) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration; client_config is a url or a service reference, with caBundle."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "kompress"}},
        "webhooks": [{
            "name": WEBHOOK_NAME,
            "rules": [{"apiGroups": [API_GROUP], "apiVersions": [API_VERSION], "resources": [PLURAL],
                       "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}],
            "clientConfig": client_config,
            "failurePolicy": FAILURE_POLICY,
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "timeoutSeconds": TIMEOUT_SECONDS,
            "admissionReviewVersions": ["v1"],
        }],
    }


def server(settings: OperatorSettings, kube) -> "WebhookServer":
    """The server Kopf runs; with webhook_register, it (re)registers the configuration as it starts."""
    async def register(client_config: dict) -> None:
        for config in configurations(client_config):
            await asyncio.to_thread(kube.apply_webhook_configuration, config)
        log.info("registered the admission webhooks %s at %s", CONFIGURATION_NAME, client_config["url"])
    return WebhookServer(settings, register if settings.webhook_register else None)


class WebhookServer(kopf.WebhookServer):
    """Kopf's HTTPS server, with our certificate, registering the configuration on each (re)start
    when asked to (Kopf's own managed mode needs `create` on every webhook configuration)."""

    def __init__(self, settings: OperatorSettings, on_config: Callable[[dict], Awaitable[None]] | None = None):
        if settings.webhook_cert_dir:
            folder = Path(settings.webhook_cert_dir)
            ca = folder / "ca.crt"
            files = {"certfile": folder / "tls.crt", "pkeyfile": folder / "tls.key", "cafile": ca if ca.exists() else None}
        else:
            files = self_signed(settings.webhook_host)
        if settings.webhook_client_ca:  # only the API server, by its client certificate
            files |= {"verify_mode": ssl.CERT_REQUIRED, "verify_cafile": settings.webhook_client_ca}
        super().__init__(port=settings.webhook_port, host=settings.webhook_host, **files)
        self.on_config = on_config
        self.listening = False  # what the readiness probe waits for (main.py)

    async def __call__(self, fn) -> AsyncIterator[dict]:
        async for client_config in super().__call__(fn):
            self.listening = True  # Kopf yields the client configuration once its site accepts connections
            if self.on_config is not None:
                await self.on_config(dict(client_config))
            yield client_config


def self_signed(host: str) -> dict[str, Path]:
    """A self-signed certificate (its own CA) for host, valid a year, in a private temp folder."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=365))
                   .add_extension(x509.SubjectAlternativeName([san]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    folder = Path(tempfile.mkdtemp(prefix="kompress-webhook-"))
    (folder / "tls.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return {"certfile": folder / "tls.crt", "pkeyfile": folder / "tls.key"}
