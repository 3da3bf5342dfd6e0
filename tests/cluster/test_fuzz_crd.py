"""The CRD and the pydantic models agree: every spec pydantic accepts, the API server accepts too
(the CRD may be looser, never stricter). Hypothesis generates the specs; the API server judges
them with a server-side dry run, so nothing is stored."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from kubernetes.client.rest import ApiException

from kompress_jobs.errors import SpecError
from kompress_jobs.spec.specfile import resource_from_dict

from ..test_fuzz import body, specs
from .conftest import GROUP, PLURAL, VERSION


def test_whatever_pydantic_accepts_the_crd_accepts(api, namespace):
    from kubernetes import client

    custom = client.CustomObjectsApi(api)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(specs)
    def check(spec):
        document = body(spec)
        document["metadata"] = {"name": "fuzzed", "namespace": namespace}
        try:
            resource_from_dict(document)
            valid = True
        except SpecError:
            valid = False
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, document, dry_run="All")
        except ApiException as exc:
            assert exc.status in (400, 422), exc.body  # a rejection, never a server error
            assert not valid, f"the CRD rejects a spec pydantic accepts: {exc.body[:500]}"
        except ValueError:  # the client refuses to send NaN / Infinity: JSON cannot carry them
            assert not valid or "nan" in repr(spec).lower() or "inf" in repr(spec).lower()

    check()
