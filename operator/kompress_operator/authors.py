"""Who wrote a spec, and what they must be allowed for kompress to run it on their behalf: the
admission webhook asks it at apply (webhook.py), the re-optimizer again before each re-run
(reoptimizer.py), with the user the webhook recorded in the `kompress.io/author` annotation."""

from __future__ import annotations

import json

from kompress_jobs.spec.schema import API_GROUP, JobSettings

from . import policy

AUTHOR_ANNOTATION = f"{API_GROUP}/author"

# What a spec decides about its Job's identity and placement: each asks the operator to do what
# Kubernetes lets only Job creators do.
PRIVILEGED_FIELDS = ("image", "service_account_name", "tolerations", "node_selector", "priority_class_name", "queue_name")
JOB_CREATE = {"verb": "create", "group": "batch", "resource": "jobs"}

SECRET_GET = {"verb": "get", "group": "", "resource": "secrets"}


def author_annotation(user: dict) -> str:
    """The record of a requester, as the API server authenticated them: what a later review asks about."""
    return json.dumps({"username": user.get("username") or "", "uid": user.get("uid") or "",
                       "groups": sorted(user.get("groups") or [])}, separators=(",", ":"), sort_keys=True)


def recorded_author(body: dict | None) -> dict | None:
    """The user who last changed the spec, from the annotation; None when not recorded (or unreadable)."""
    text = ((body or {}).get("metadata", {}).get("annotations") or {}).get(AUTHOR_ANNOTATION)
    try:
        author = json.loads(text) if text else None
    except ValueError:
        return None
    return author if isinstance(author, dict) and isinstance(author.get("username"), str) and author["username"] else None


def asked_fields(job: JobSettings) -> list[str]:
    """The privileged fields the spec sets, as wire paths."""
    return [policy.job_field(name) for name in PRIVILEGED_FIELDS if getattr(job, name)]
