"""The admission webhook answers only the API server: with --webhook-client-ca it requires the client
certificate the API server presents (its AdmissionConfiguration, as tests/harness/control_plane.py
sets it up), so a Pod cannot post reviews with a userInfo of its choosing (an access-review oracle)
nor flood it. Applies still go through, and are still judged."""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest

from kompress_operator.authors import AUTHOR_ANNOTATION
from kompress_operator.webhook import CONFIGURATION_NAME, HANDLER_ID

from ..harness.control_plane import free_port
from .conftest import apply, get, refusal, resource, unregister_webhooks, wait_for

pytestmark = pytest.mark.cluster


def _post_review(port: int, context: ssl.SSLContext) -> int:
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "1", "operation": "CREATE", "userInfo": {"username": "team-lead", "groups": ["system:authenticated"]},
        "object": {"apiVersion": "kompress.io/v1alpha1", "kind": "ModelOptimization", "metadata": {"name": "x", "namespace": "team-a"}}}}
    request = urllib.request.Request(f"https://127.0.0.1:{port}/{HANDLER_ID}", data=json.dumps(review).encode(),
                                     headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(request, context=context, timeout=5).status


def test_only_the_api_server_reaches_the_webhook(cluster, namespace, start_operator, s3, tmp_path):
    port = free_port()
    start_operator("--webhook-port", str(port), "--webhook-register", "--webhook-host", "127.0.0.1",
                   "--webhook-client-ca", str(cluster.webhook_client_ca))
    wait_for(lambda: cluster.kubectl("get", "validatingwebhookconfiguration", CONFIGURATION_NAME, check=False).returncode == 0,
             "the operator to register its webhook", timeout=60)
    try:
        # through the API server: judged as ever, and admitted when right
        broken = resource("judged", s3, passes=[{"type": "OnnxExport"}, {"type": "StaticInt8", "opset": 17}])
        assert "spec.passes[1].opset" in refusal(cluster, namespace, broken)
        apply(cluster, namespace, resource("admitted", s3))
        # the mutating webhook recorded who wrote it, as the API server authenticated them
        author = json.loads(get(cluster, namespace, "modeloptimizations", "admitted")["metadata"]["annotations"][AUTHOR_ANNOTATION])
        assert author["username"] == "admin" and "system:masters" in author["groups"]

        # straight to the webhook, as any Pod could: no client certificate, or one of another CA
        plain = ssl.create_default_context()
        plain.check_hostname, plain.verify_mode = False, ssl.CERT_NONE
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _post_review(port, plain)
        other = tmp_path / "other"
        other.mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
                        "-days", "1", "-subj", "/CN=kube-apiserver"], check=True, capture_output=True, cwd=other)
        forged = ssl.create_default_context()
        forged.check_hostname, forged.verify_mode = False, ssl.CERT_NONE
        forged.load_cert_chain(other / "cert.pem", other / "key.pem")
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _post_review(port, forged)
    finally:
        unregister_webhooks(cluster)
