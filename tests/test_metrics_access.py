"""/metrics answers only a bearer token whose user may get it (TokenReview, then SubjectAccessReview),
as controller-runtime's secure metrics serving does; the answers are kept a minute."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from kompress_operator.metrics import OperatorMetrics
from kompress_operator.metrics_access import METRICS_PATH, MetricsAccess

from .conftest import free_port

pytestmark = pytest.mark.unit

USERS = {"prometheus-token": {"username": "system:serviceaccount:monitoring:prometheus"},
         "tenant-token": {"username": "team-b-dev"}}


class FakeApi:
    def __init__(self):
        self.calls, self.down = [], False

    def review_token(self, token):
        self.calls.append(("TokenReview", token))
        if self.down:
            raise ConnectionError("the API server is away")
        return USERS.get(token)

    def may_read(self, user):
        self.calls.append(("SubjectAccessReview", user["username"]))
        return user["username"].endswith(":prometheus")


@pytest.fixture
def api():
    return FakeApi()


def test_only_a_token_whose_user_may_get_metrics_is_answered(api):
    access = MetricsAccess(api.review_token, api.may_read)
    assert access.decide(None) == 401 and access.decide("Basic dXNlcjpwYXNz") == 401 and access.decide("Bearer ") == 401
    assert access.decide("Bearer forged") == 401
    assert access.decide("Bearer tenant-token") == 403
    assert access.decide("Bearer prometheus-token") == 200
    assert api.calls == [("TokenReview", "forged"), ("TokenReview", "tenant-token"), ("SubjectAccessReview", "team-b-dev"),
                         ("TokenReview", "prometheus-token"),
                         ("SubjectAccessReview", "system:serviceaccount:monitoring:prometheus")]


def test_answers_are_kept_a_minute_and_an_unreachable_api_server_refuses_without_keeping(api):
    now = [0.0]
    access = MetricsAccess(api.review_token, api.may_read, clock=lambda: now[0])
    assert access.decide("Bearer prometheus-token") == 200
    now[0] = 59.0
    assert access.decide("Bearer prometheus-token") == 200 and len(api.calls) == 2, "kept: no second review"
    now[0] = 61.0
    api.down = True
    assert access.decide("Bearer prometheus-token") == 503
    api.down = False
    assert access.decide("Bearer prometheus-token") == 200 and len(api.calls) == 5, "the failure was not kept"


def test_the_endpoint_refuses_a_scrape_without_a_token_and_serves_one_with(api):
    port = free_port()
    metrics = OperatorMetrics()
    metrics.serve(port, "127.0.0.1", MetricsAccess(api.review_token, api.may_read))
    url = f"http://127.0.0.1:{port}{METRICS_PATH}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=5)
    assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"].startswith("Bearer")
    with pytest.raises(urllib.error.HTTPError) as forbidden:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Bearer tenant-token"}), timeout=5)
    assert forbidden.value.code == 403 and b"kompress_" not in forbidden.value.read()
    served = urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Bearer prometheus-token"}), timeout=5)
    assert "kompress_queue_depth" in served.read().decode()
