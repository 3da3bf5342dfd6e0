"""The few API calls the operator makes beyond Kopf's own, through the official client.

Calls are synchronous; handlers run them in a thread (asyncio.to_thread) so the event loop stays free.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kompress_jobs.errors import KompressError
from kompress_jobs.spec.schema import API_GROUP, API_VERSION, PLURAL

from .run_ref import RESOURCE_LABEL, RunRef

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 10  # seconds


def _json(response) -> Any:
    return json.loads(_read(response))


def _read(response) -> bytes:
    """The body, with the connection handed back to the pool (unread, it would be dropped and the
    next call would pay a new TLS handshake)."""
    try:
        return response.data
    finally:
        response.release_conn()


def load_config(connections: int = 32) -> None:
    """In-cluster configuration, else the kubeconfig; KompressError in one line when neither is there."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            where = os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise KompressError(f"no cluster to talk to: not in a Pod (no service account token) and no usable kubeconfig "
                                f"at {where} ({str(exc).strip().splitlines()[0][:200]})") from None
    # One pooled connection per handler thread (the default, 5 per CPU, would make a burst queue).
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = connections
    client.Configuration.set_default(configuration)


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None, timeout: float = 60.0):
        self.api = api_client or client.ApiClient()
        # (connect, read) seconds for every call: without it a connection that silently stops answering
        # (a dropped NAT entry, a restarted load balancer) would hang a handler thread for good.
        self.timeout = (min(CONNECT_TIMEOUT, timeout), timeout)
        # Answers are taken as JSON, not turned into the client's model classes (and back to dicts):
        # that round trip cost about a fifth of the operator's CPU in a 200-resource burst.
        self.raw = {"_request_timeout": self.timeout, "_preload_content": False}
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def ping(self) -> None:
        """GET /version (open to every authenticated user): opens a pooled connection."""
        _read(client.VersionApi(self.api).get_code(**self.raw))

    def create_job(self, manifest: dict) -> bool:
        """True when created, False when a Job of that name already exists (idempotent)."""
        try:
            _read(self.batch.create_namespaced_job(manifest["metadata"]["namespace"], manifest, **self.raw))
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def jobs_of(self, namespace: str, resource: str) -> list[dict]:
        return _json(self.batch.list_namespaced_job(namespace, label_selector=f"{RESOURCE_LABEL}={resource}", **self.raw))["items"]

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background", _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def list_nodes(self) -> list[dict]:
        return _json(self.core.list_node(**self.raw))["items"]

    def pods_of_job(self, namespace: str, job: str) -> list[dict]:
        return _json(self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}", **self.raw))["items"]

    def get_resource(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None) -> bool:
        """Merge-patch the status; with resource_version, only over that version of the resource.
        False when the resource is gone, or changed since that version (409 Conflict)."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            _read(self.custom.patch_namespaced_custom_object_status(API_GROUP, API_VERSION, namespace, PLURAL, name, body, **self.raw))
            return True
        except ApiException as exc:
            if exc.status == 404 or (exc.status == 409 and resource_version):
                return False
            raise

    def user_can(self, user: dict, namespace: str, attributes: dict[str, str]) -> tuple[bool, str]:
        """A SubjectAccessReview for an admission request's userInfo: (allowed, the authorizer's reason)."""
        return self._access_review(user, {"resourceAttributes": {"namespace": namespace, **attributes}})

    def user_may_get_path(self, user: dict, path: str) -> bool:
        """Whether a user (a TokenReview's) may get a non-resource URL such as /metrics."""
        return self._access_review(user, {"nonResourceAttributes": {"path": path, "verb": "get"}})[0]

    def review_token(self, token: str) -> dict | None:
        """The user a bearer token authenticates (a TokenReview), or None."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        status = _json(client.AuthenticationV1Api(self.api).create_token_review(review, **self.raw)).get("status") or {}
        return status.get("user") if status.get("authenticated") else None

    def _access_review(self, user: dict, attributes: dict) -> tuple[bool, str]:
        spec = {"user": user.get("username"), "uid": user.get("uid"), "groups": user.get("groups") or [],
                "extra": user.get("extra") or {}, **attributes}
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        status = _json(client.AuthorizationV1Api(self.api).create_subject_access_review(review, **self.raw)).get("status") or {}
        return bool(status.get("allowed")), status.get("reason") or status.get("evaluationError") or ""

    def apply_webhook_configuration(self, configuration: dict) -> None:
        """Create the Validating- or MutatingWebhookConfiguration, or bring one of that name up to date."""
        api = client.AdmissionregistrationV1Api(self.api)
        kind = "mutating" if configuration["kind"] == "MutatingWebhookConfiguration" else "validating"
        try:
            _read(getattr(api, f"create_{kind}_webhook_configuration")(configuration, **self.raw))
        except ApiException as exc:
            if exc.status != 409:
                raise
            _read(getattr(api, f"patch_{kind}_webhook_configuration")(configuration["metadata"]["name"], configuration, **self.raw))

    def apply_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Create an Opaque Secret, or replace the data of the one of that name."""
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "stringData": data,
                "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "kompress"}}}
        try:
            _read(self.core.create_namespaced_secret(namespace, body, **self.raw))
        except ApiException as exc:
            if exc.status != 409:
                raise
            _read(self.core.patch_namespaced_secret(name, namespace, body, **self.raw))

    def event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the resource, as `kubectl describe` shows them."""
        meta = obj["metadata"]
        timestamp = datetime.now(timezone.utc)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(api_version=obj.get("apiVersion"), kind=obj.get("kind"),
                                                     name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid")),
            type=type_, reason=reason, message=message[:1024], count=1, first_timestamp=timestamp, last_timestamp=timestamp,
            source=client.V1EventSource(component="kompress-operator"), reporting_component="kompress-operator",
        )
        try:
            _read(self.core.create_namespaced_event(meta["namespace"], body, **self.raw))
        except ApiException as exc:  # an event is best effort: never fail a reconciliation for it
            if exc.status == 403:
                log.warning("cannot post Events in %s (Forbidden): grant `create` on events", meta["namespace"])
            elif exc.status not in (404, 409, 422):
                raise


def describe_error(exc: Exception) -> str:
    """One line for a status message: for a refused API call, the API server's own message (the
    client's text is mostly HTTP headers)."""
    if isinstance(exc, ApiException):
        try:
            said = json.loads(exc.body or "{}").get("message")
        except (TypeError, ValueError):
            said = None
        return f"ApiException {exc.status} {exc.reason}: {said or exc.body or ''}".strip()[:600]
    return f"{type(exc).__name__}: {str(exc)[:400]}"


def older_generation_jobs(jobs: list[dict], generation: int) -> list[str]:
    return [j["metadata"]["name"] for j in jobs if RunRef.of_job(j).generation < generation]
