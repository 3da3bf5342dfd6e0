"""kubectl apply → Job → Pod → the real pipeline → S3 → status → /metrics → Prometheus."""

from __future__ import annotations

import json
import subprocess
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import boto3

from ..harness.control_plane import ADMIN_TOKEN, free_port
from .conftest import apply, condition, get, phase_is, resource, wait_for


def test_apply_runs_the_pipeline_and_reports_everywhere(cluster, namespace, s3, start_operator, assets):
    operator = start_operator()
    # Ranked by size, so which candidate is picked does not hang on this machine's timing noise.
    apply(cluster, namespace, resource("digits", s3, goals={"maxAccuracyDrop": 1.0, "optimizeFor": "Size"}))

    done = wait_for(phase_is(cluster, namespace, "digits", "Succeeded", "Failed"), "the run to finish")
    status = done["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert condition(done, "Succeeded")["status"] == "True" and condition(done, "Succeeded")["reason"] == "Completed"
    assert condition(done, "Accepted")["status"] == "True" and condition(done, "Reconciling")["status"] == "False"
    assert all(c["observedGeneration"] == 1 for c in status["conditions"]) and status["observedGeneration"] == 1
    accepted = [c for c in status["candidates"] if c["accepted"]]
    best = min(accepted, key=lambda c: c["sizeBytes"])["name"]
    assert status["best"]["name"] == best and status["best"]["speedup"] > 0
    assert status["baseline"]["name"] == "baseline" and status["startTime"] <= status["completionTime"]
    assert {c["name"] for c in status["candidates"]} == {"onnx-export", "static-int8"}

    # The artifacts the status points at are in S3, with the manifest whose digest it records.
    uri = status["artifacts"]["uri"]
    run = f"runs/{namespace}/digits/runs/{namespace}-digits-g1"  # <root>/<namespace>/<name>/runs/<run id>
    assert uri == f"s3://models/{run}"
    manifest = boto3.client("s3", endpoint_url=s3).get_object(Bucket="models", Key=f"{run}/manifest.json")
    body = manifest["Body"].read()
    import hashlib
    assert hashlib.sha256(body).hexdigest() == status["artifacts"]["manifestSha256"]

    # One Job, owned by the resource, and events for the transitions.
    jobs = get(cluster, namespace, "jobs")["items"]
    assert [j["metadata"]["name"] for j in jobs] == ["digits-g1"]
    owner = jobs[0]["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "ModelOptimization" and owner["name"] == "digits" and owner["controller"] is True
    reasons = {e["reason"] for e in get(cluster, namespace, "events")["items"]}
    assert {"JobCreated", "Completed"} <= reasons

    # kubectl shows the printer columns.
    table = cluster.kubectl("get", "mopt", "-n", namespace).stdout
    assert best in table and "Completed" in table

    # The operator exports the result and a real Prometheus scrapes it.
    text = operator.metrics()
    series = f'kompress_best_speedup_ratio{{candidate="{best}",name="digits",namespace="{namespace}",target=""}}'
    assert series in text
    assert f'kompress_runs_total{{namespace="{namespace}",outcome="succeeded",reason="Completed"}} 1.0' in text
    assert "kompress_running_jobs 0.0" in text and "kompress_queue_depth 0.0" in text
    assert 'kompress_reconcile_total{controller="modeloptimization",result="success"}' in text
    speedup = query_prometheus(assets / "prometheus", operator.metrics_port,
                               f'kompress_best_speedup_ratio{{namespace="{namespace}",name="digits"}}')
    assert abs(speedup - status["best"]["speedup"]) < 1e-6


def query_prometheus(binary: Path, metrics_port: int, query: str, token: str = ADMIN_TOKEN) -> float:
    """Start Prometheus scraping the operator every second with a bearer token, as the chart's
    ServiceMonitor does, and return the query's single value."""
    workdir = Path(tempfile.mkdtemp(prefix="kompress-prom-"))
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: kompress-operator, authorization: {{credentials: {token}}}, "
        f"static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]}}]\n")
    port = free_port()
    process = subprocess.Popen([str(binary), f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(query)}"

        def value():
            answer = json.loads(urllib.request.urlopen(url, timeout=2).read())
            results = answer["data"]["result"]
            return float(results[0]["value"][1]) if results else None

        return wait_for(value, f"Prometheus to answer {query}", timeout=60)
    finally:
        process.terminate()
        process.wait(20)


def test_a_fine_tuned_transformer_classifier_runs_through_the_operator(cluster, namespace, s3, start_operator, tmp_path):
    """A labelled multi-input model as users keep it: a Hugging Face checkpoint directory and text rows in S3."""
    from ..transformer_fixtures import fine_tuned_minilm_classifier, write_sentences

    sentences = write_sentences(tmp_path / "sentences.jsonl", {"train": 256, "calibration": 64, "evaluation": 64})
    checkpoint = fine_tuned_minilm_classifier(tmp_path / "classifier", sentences)
    client = boto3.client("s3", endpoint_url=s3)
    for path in checkpoint.iterdir():
        client.upload_file(str(path), "models", f"inputs/minilm-classifier/{path.name}")
    client.upload_file(str(sentences), "models", "inputs/sentences.jsonl")

    start_operator()
    apply(cluster, namespace, resource(
        "classifier", s3,
        model={"uri": "s3://models/inputs/minilm-classifier", "format": "HuggingFace"},
        data={"uri": "s3://models/inputs/sentences.jsonl", "text": {"column": "text", "labelColumn": "label", "maxLength": 32}},
        task={"type": "Classification"},
        passes=[{"type": "OnnxExport"}, {"type": "AutoQuantize", "methods": ["Dynamic"], "maxTrials": 2}],
        goals={"maxAccuracyDrop": 2.0},
        benchmark={"batchSizes": [1], "warmup": 2, "iterations": 5, "rounds": 2, "threads": 1},
    ))
    done = wait_for(phase_is(cluster, namespace, "classifier", "Succeeded", "Failed"), "the transformer run to finish", timeout=600)
    status = done["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["baseline"]["metricValue"] > 0.9  # the brief fine-tuning learnt the generated sentiment
    assert {c["name"] for c in status["candidates"]} == {"onnx-export", "auto-quantize"}
    report = json.loads(client.get_object(Bucket="models", Key=f"runs/{namespace}/classifier/runs/{namespace}-classifier-g1/report.json")["Body"].read())
    assert report["inputs"]["inputNames"] == ["input_ids", "attention_mask"]
    quantized = next(c for c in report["candidates"] if c["name"] == "auto-quantize")
    assert quantized["details"]["trials"] and quantized["metric"]["fidelity"]["top1Agreement"] > 0.9


def test_a_causal_language_model_runs_through_the_operator(cluster, namespace, s3, start_operator, tmp_path):
    """A decoder LM as users keep it (a checkpoint folder in S3) judged on plain text in S3: perplexity,
    tokens/s and time to first token in the status, the GenAI build's folder in the store."""
    from ..llm_fixtures import license_text, tiny_llama

    checkpoint = tiny_llama(tmp_path / "llama")
    client = boto3.client("s3", endpoint_url=s3)
    for path in checkpoint.iterdir():
        client.upload_file(str(path), "models", f"inputs/llama/{path.name}")
    client.upload_file(str(license_text()), "models", "inputs/gpl-3.txt")

    start_operator()
    apply(cluster, namespace, resource(
        "llama", s3,
        model={"uri": "s3://models/inputs/llama", "format": "HuggingFace"},
        data={"uri": "s3://models/inputs/gpl-3.txt"},
        task={"type": "LanguageModeling", "contextLength": 64, "evaluationTokens": 128},
        passes=[{"type": "OnnxGenAI", "precision": "Int8"}],
        goals={"maxAccuracyDrop": 5, "accuracyDropMode": "Relative"},
        benchmark={"batchSizes": [1], "warmup": 1, "rounds": 2, "threads": 1, "generation": {"promptTokens": 16, "newTokens": 8}},
    ))
    done = wait_for(phase_is(cluster, namespace, "llama", "Succeeded", "Failed"), "the language model run to finish", timeout=600)
    status = done["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["baseline"]["metricValue"] > 1  # perplexity
    for summary in (status["baseline"], status["candidates"][0]):
        assert summary["tokensPerSecond"] > 0 and summary["timeToFirstTokenMs"] > 0
    report = json.loads(client.get_object(Bucket="models", Key=f"runs/{namespace}/llama/runs/{namespace}-llama-g1/report.json")["Body"].read())
    built = next(c for c in report["candidates"] if c["name"] == "onnx-genai")
    assert built["format"] == "OnnxGenAI" and f"{built['artifact']}/genai_config.json" in built["artifactFiles"]
