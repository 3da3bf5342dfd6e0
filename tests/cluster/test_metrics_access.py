"""/metrics on the real API server: a scrape without a token, or with the token of a user who may
not get /metrics, is refused; a Prometheus with the token of a user who may scrapes."""

from __future__ import annotations

import urllib.error

import pytest

from .test_end_to_end import query_prometheus

pytestmark = pytest.mark.cluster


def test_only_a_user_who_may_get_metrics_scrapes_them(cluster, start_operator, assets):
    cluster.kubectl("create", "clusterrole", "kompress-metrics-reader", "--verb=get", "--non-resource-url=/metrics")
    cluster.kubectl("create", "clusterrolebinding", "scraper-reads-metrics", "--clusterrole=kompress-metrics-reader", "--user=scraper")
    try:
        operator = start_operator()
        for token, status in ((None, 401), ("not-a-token", 401), ("team-b-dev-token", 403)):
            with pytest.raises(urllib.error.HTTPError) as refused:
                operator.metrics(token=token)
            assert refused.value.code == status, (token, refused.value.code)
        assert "kompress_queue_depth" in operator.metrics(token="scraper-token")
        # `up` is 1 only when the scrape itself succeeded (a refused scrape gives 0)
        assert query_prometheus(assets / "prometheus", operator.metrics_port, "kompress_queue_depth + up", token="scraper-token") == 1.0
    finally:
        cluster.kubectl("delete", "clusterrolebinding", "scraper-reads-metrics", check=False)
        cluster.kubectl("delete", "clusterrole", "kompress-metrics-reader", check=False)
