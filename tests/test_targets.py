"""Hardware targets (spec.targets), without an API server: the schema and its refusals, what a cap
hides from kompress's view of the CPU, each target's Job, the policy per target, the slots a run
holds, status.targets as the Jobs finish, the metrics per target, and where no node takes one."""

from __future__ import annotations

import json

import pytest
from kompress_jobs.errors import SpecError
from kompress_jobs.spec.contract import JobEnv, JobMessage, RunArtifacts, RunSummary
from kompress_jobs.spec.schema import ModelOptimizationSpec
from kompress_jobs.spec.specfile import resource_from_dict
from kompress_jobs.spec.status import CandidateSummary, ModelOptimizationStatus
from kompress_jobs.spec.targets import MAX_CPU_ISA_ENV, CpuIsa, capped_flags, isa_environment
from kompress_operator import policy, targets
from kompress_operator.conditions import FAILED, QUEUED, RUNNING, SUCCEEDED, Transition
from kompress_operator.jobspec import build_job
from kompress_operator.jobstate import JobOutcome
from kompress_operator.metrics import OperatorMetrics
from kompress_operator.placement import unschedulable
from kompress_operator.run_ref import TARGET_LABEL, RunRef
from kompress_operator.settings import OperatorSettings
from kompress_operator.tuning_phase import slots_of

from .conftest import resource_dict

pytestmark = pytest.mark.unit

ZEN4 = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd",
                  "avx512_vnni", "avx512_bf16", "avx512_vbmi"})
SAPPHIRE_RAPIDS = ZEN4 | {"amx_tile", "amx_int8", "amx_bf16", "avx512_fp16", "avx_vnni"}
TWO = [{"name": "avx2", "maxCpuIsa": "AVX2", "nodeSelector": {"pool": "old"}},
       {"name": "native", "nodeSelector": {"pool": "new"}, "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "resources": {"requests": {"cpu": 4}}}]
SETTINGS = OperatorSettings(storage_locations=("*",), max_running=4, max_running_per_namespace=4,
                            allowed_node_selectors=("pool=*", "zone=*"), allowed_tolerations=({"key": "dedicated"},))


def document(targets=TWO, **spec) -> dict:
    body = resource_dict(name="fleet", targets=targets, **spec)
    body["metadata"] |= {"namespace": "team", "generation": 3}
    return body


def spec_of(body: dict) -> ModelOptimizationSpec:
    return resource_from_dict(body).spec


# --- the schema ------------------------------------------------------------------------------


@pytest.mark.parametrize("given, words", [
    ([{"name": "cpu"}, {"name": "cpu"}], ["targets", "cpu is named twice"]),
    ([{"name": "Big_Pool"}], ["name"]),
    ([{"name": "cpu", "maxCpuIsa": "SSE2"}], ["maxCpuIsa"]),
])
def test_a_target_list_that_cannot_run_is_refused_naming_the_field(given, words):
    with pytest.raises(SpecError) as raised:
        resource_from_dict(document(given))
    assert all(w in str(raised.value) for w in words)


def test_a_parallel_study_with_several_targets_is_refused_with_the_way_out():
    body = document(passes=[{"type": "OnnxExport"}, {"type": "StaticInt8", "name": "int8"}],
                    tuning={"trials": 4, "parallelism": 2,
                            "searchSpace": [{"pass": "int8", "parameter": "perChannel", "choices": [True, False]}]})
    with pytest.raises(SpecError, match="tuning.parallelism: a parallel study .* several targets"):
        resource_from_dict(body)


def test_a_target_resolves_the_job_it_runs_in():
    spec = spec_of(document(job={"nodeSelector": {"zone": "a", "pool": "any"},
                                 "tolerations": [{"key": "spot", "operator": "Exists"}]}))
    old, native = spec.for_target("avx2"), spec.for_target("native")
    assert old.targets == [spec.targets[0]] and old.target().name == "avx2"
    assert old.job.node_selector == {"zone": "a", "pool": "old"}  # extended, the target's value wins
    assert [t.key for t in old.job.tolerations] == ["spot"]  # kept: the target names none
    assert [t.key for t in native.job.tolerations] == ["dedicated"]  # replaced
    assert native.job.resources.requests == {"cpu": 4}
    with pytest.raises(ValueError, match="no target named 'gpu' in spec.targets \\(it names avx2, native\\)"):
        spec.for_target("gpu")


# --- what a cap hides -----------------------------------------------------------------------


def test_a_cap_hides_the_flags_above_it_and_only_those():
    avx2 = capped_flags(SAPPHIRE_RAPIDS, CpuIsa.AVX2)
    assert {"avx2", "fma", "f16c", "sse4_2"} <= avx2 and not any(f.startswith(("avx512", "amx", "avx_vnni")) for f in avx2)
    vnni = capped_flags(SAPPHIRE_RAPIDS, CpuIsa.AVX512_CORE_VNNI)
    assert "avx512_vnni" in vnni and "avx512_bf16" not in vnni and "amx_int8" not in vnni
    assert "avx512_bf16" in capped_flags(SAPPHIRE_RAPIDS, CpuIsa.AVX512_CORE_BF16)
    assert capped_flags(ZEN4, CpuIsa.AVX512_CORE_AMX) == ZEN4  # a cap never adds what the CPU lacks
    assert capped_flags(ZEN4, None) == ZEN4


def test_kompress_sees_the_cpu_as_the_capped_target_does(monkeypatch):
    from kompress_jobs.measurement import fingerprint, hardware

    monkeypatch.setattr(hardware, "_cpu_as_built", lambda: ("Test CPU", SAPPHIRE_RAPIDS))
    assert hardware.cpu_lacks("bf16") is None
    monkeypatch.setenv(MAX_CPU_ISA_ENV, "AVX2")
    assert "neither amx_bf16 nor avx512_bf16" in hardware.cpu_lacks("bf16")
    cpu = fingerprint.machine_fingerprint().cpu
    assert cpu.max_isa == "AVX2" and not any(f.startswith("avx512") for f in cpu.flags)
    assert isa_environment(CpuIsa.AVX2) == {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", MAX_CPU_ISA_ENV: "AVX2"}
    assert isa_environment(CpuIsa.AVX512_CORE_VNNI)["ATEN_CPU_CAPABILITY"] == "avx512" and isa_environment(None) == {}


def test_a_run_for_a_capped_target_refuses_a_process_started_without_its_cap(monkeypatch, tmp_path):
    from kompress_jobs.pipeline.run import check_target_environment

    for name in isa_environment(CpuIsa.AVX2):
        monkeypatch.delenv(name, raising=False)
    spec = spec_of(document())
    with pytest.raises(SpecError, match="names 2 targets: a run is for one of them"):
        check_target_environment(spec)
    with pytest.raises(SpecError, match=r"spec.targets\[avx2\].maxCpuIsa: .*ONEDNN_MAX_CPU_ISA=AVX2"):
        check_target_environment(spec.for_target("avx2"))
    check_target_environment(spec.for_target("native"))  # no cap: nothing to apply
    for name, value in isa_environment(CpuIsa.AVX2).items():
        monkeypatch.setenv(name, value)
    check_target_environment(spec.for_target("avx2"))


def test_each_target_promotes_to_a_folder_of_its_own(tmp_path):
    from kompress_jobs.storage.promotion import promotion_store
    from kompress_jobs.storage.store import LocalStore

    spec = spec_of(document(promotion={}))
    opened = lambda uri: LocalStore(tmp_path / "elsewhere")  # noqa: E731
    store = promotion_store(LocalStore(tmp_path), spec.for_target("avx2"), "team", "fleet", opened)
    assert store.uri("current.json") == str(tmp_path / "team/fleet/targets/avx2/current.json")
    plain = promotion_store(LocalStore(tmp_path), spec_of(resource_dict(promotion={})), "team", "fleet", opened)
    assert plain.uri("current.json") == str(tmp_path / "team/fleet/current.json")


# --- the operator: a Job per target ---------------------------------------------------------


def test_each_target_gets_its_own_job_on_its_own_nodes_with_its_cap():
    body = document()
    spec = spec_of(body)
    old = build_job(body, spec, SETTINGS, target="avx2")
    native = build_job(body, spec, SETTINGS, target="native")
    assert old["metadata"]["name"] == "fleet-avx2-g3" == RunRef("team", "fleet", 3, target="avx2").job_name()
    assert native["metadata"]["name"] == "fleet-native-g3"
    assert old["metadata"]["labels"][TARGET_LABEL] == "avx2"
    pods = [job["spec"]["template"]["spec"] for job in (old, native)]
    assert [p["nodeSelector"] for p in pods] == [{"pool": "old"}, {"pool": "new"}]
    assert "tolerations" not in pods[0] and pods[1]["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    env = [{e["name"]: e.get("value") for e in p["containers"][0]["env"]} for p in pods]
    assert env[0]["ONEDNN_MAX_CPU_ISA"] == "AVX2" and "ONEDNN_MAX_CPU_ISA" not in env[1]
    assert env[0][JobEnv.RUN_ID.value] == "team-fleet-g3-avx2"
    sent = json.loads(env[0][JobEnv.RESOURCE.value])["spec"]
    assert [t["name"] for t in sent["targets"]] == ["avx2"] and sent["job"]["nodeSelector"] == {"pool": "old"}
    assert pods[1]["containers"][0]["resources"]["requests"] == {"cpu": "4"}


def test_the_policy_names_the_target_whose_job_it_refuses():
    body = document([{"name": "ok", "nodeSelector": {"pool": "a"}}, {"name": "bad", "nodeSelector": {"team": "x"}}])
    with pytest.raises(policy.PolicyViolation) as raised:
        policy.enforce(spec_of(body), SETTINGS, "team")
    assert str(raised.value).startswith("spec.targets[1].nodeSelector.team: node selector team=x is not allowed")
    narrow = OperatorSettings(storage_locations=("*",), max_running=4, max_running_per_namespace=1,
                              allowed_node_selectors=("pool=*",))
    with pytest.raises(policy.PolicyViolation, match="spec.targets: 2 targets can never start: .* at most 1 run at once"):
        policy.enforce(spec_of(document()), narrow, "team")


def test_a_run_holds_a_slot_per_target_while_its_jobs_run():
    body = document()
    assert slots_of(body) == 2
    assert slots_of(body | {"status": {"phase": RUNNING}}) == 2
    assert slots_of(resource_dict() | {"status": {"phase": RUNNING}}) == 1


def test_a_target_no_node_takes_is_told_and_why():
    nodes = [{"metadata": {"labels": {"pool": "old"}}},
             {"metadata": {"labels": {"pool": "new"}}, "spec": {"taints": [{"key": "dedicated", "effect": "NoSchedule"}]}},
             {"metadata": {"labels": {"pool": "gpu"}}, "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}}]
    spec = spec_of(document())
    assert unschedulable(spec, nodes, 3600) == {}
    untolerated = spec_of(document([TWO[0], {"name": "gpu", "nodeSelector": {"pool": "gpu"}}]))
    assert list(unschedulable(untolerated, nodes, 3600)) == ["gpu"]
    missing = unschedulable(spec_of(document([{"name": "arm", "nodeSelector": {"pool": "arm"}}])), nodes, 600)
    assert "no node of the 3 in the cluster matches pool=arm" in missing["arm"] and "fails after 600s" in missing["arm"]


# --- status.targets ---------------------------------------------------------------------------


def summary(target: str, best: str | None, speedup: float = 3.0) -> RunSummary:
    baseline = CandidateSummary(name="baseline", technique="none", accepted=True, metric_value=0.98)
    pick = CandidateSummary(name=best, technique="quantization", accepted=True, speedup=speedup) if best else None
    return RunSummary(run_id=f"team-fleet-g3-{target}", metric="Accuracy", batch_size=1,
                      artifacts=RunArtifacts(uri=f"s3://b/{target}", manifest_sha256="0" * 64), baseline=baseline,
                      best=pick, machine="AMD EPYC" + (" (capped at AVX2)" if target == "avx2" else ""),
                      plan=["onnx-export", "auto-quantize"])


def launched(body: dict, waiting: bool = False, unmatched=None) -> dict:
    jobs = {"avx2": "fleet-avx2-g3", "native": "fleet-native-g3"}
    return body | {"status": targets.launched(body, 3, jobs, waiting, "2 target Jobs", unmatched)}


def test_the_run_finishes_with_its_last_target_and_keeps_each_pick():
    body = launched(document())
    assert body["status"]["phase"] == RUNNING and body["status"]["targetsDone"] == "0/2"
    assert [t["phase"] for t in body["status"]["targets"]] == [RUNNING, RUNNING]
    first = targets.target_finished(body, 3, 0, "native", JobOutcome(SUCCEEDED, "Completed", result=summary("native", "ov-int8", 4.1)))
    body["status"] |= first
    assert first["phase"] == RUNNING and first["targetsDone"] == "1/2"
    native = first["targets"][1]
    assert native["phase"] == SUCCEEDED and native["best"]["name"] == "ov-int8" and native["plan"] == ["onnx-export", "auto-quantize"]
    assert targets.target_finished(body, 3, 0, "native", JobOutcome(SUCCEEDED, "Completed", result=summary("native", "x"))) is None
    last = targets.target_finished(body, 3, 0, "avx2", JobOutcome(SUCCEEDED, "Completed", result=summary("avx2", "ort-int8", 2.0)))
    assert last["phase"] == SUCCEEDED and last["targetsDone"] == "2/2" and last["completionTime"]
    message = next(c for c in last["conditions"] if c["type"] == "Succeeded")["message"]
    assert message == "2 targets done: avx2: ort-int8 2.0x faster; native: ov-int8 4.1x faster"
    assert last["targets"][0]["machine"] == "AMD EPYC (capped at AVX2)"
    typed = ModelOptimizationStatus.model_validate(body["status"] | last)  # what the CRD declares
    assert [t.best.name for t in typed.targets] == ["ort-int8", "ov-int8"]


def test_a_failed_target_fails_the_run_once_all_are_done_and_names_it():
    body = launched(document())
    body["status"] |= targets.target_finished(body, 3, 0, "avx2", JobOutcome(FAILED, "ModelLoadError", "cannot load"))
    assert body["status"]["phase"] == RUNNING
    last = targets.target_finished(body, 3, 0, "native", JobOutcome(SUCCEEDED, "Completed", result=summary("native", "ov-int8")))
    assert last["phase"] == FAILED and last["targets"][1]["best"]["name"] == "ov-int8"  # the other's result stays
    reason = next(c for c in last["conditions"] if c["type"] == "Succeeded")
    assert reason["reason"] == "TargetsFailed" and "avx2: ModelLoadError: cannot load" in reason["message"]


def test_with_kueue_each_target_runs_when_admitted_and_a_preempted_one_waits_again():
    body = launched(document(), waiting=True)
    assert body["status"]["phase"] == QUEUED and [t["phase"] for t in body["status"]["targets"]] == [QUEUED, QUEUED]
    moved = targets.target_moved(body, 3, 0, "native", Transition(RUNNING, "JobRunning", "admitted"))
    assert moved["phase"] == RUNNING and moved["targets"][1]["phase"] == RUNNING and moved["targets"][1]["startTime"]
    assert moved["startTime"]  # the run started when Kueue admitted its first target
    body["status"] |= moved
    assert targets.target_moved(body, 3, 0, "native", Transition(RUNNING, "JobRunning", "again")) is None
    back = targets.target_moved(body, 3, 0, "native", Transition(QUEUED, "WaitingForKueue", "preempted"))
    assert back["targets"][1]["phase"] == QUEUED


def test_a_job_of_an_older_spec_or_run_leaves_the_targets_alone():
    body = launched(document())
    done = JobOutcome(SUCCEEDED, "Completed", result=summary("avx2", "int8"))
    assert targets.target_finished(body, 2, 0, "avx2", done) is None  # the spec moved on
    assert targets.target_finished(body, 3, 1, "avx2", done) is None  # a re-run's Job, not this run's
    assert targets.target_finished(body, 3, 0, "arm", done) is None  # no such target


def test_the_target_no_node_takes_says_so_in_its_entry():
    body = launched(document(), unmatched={"native": "no node of the 1 in the cluster matches pool=new"})
    entries = {t["name"]: t for t in body["status"]["targets"]}
    assert "unschedulable" not in entries["avx2"] and entries["native"]["unschedulable"].startswith("no node")


def test_a_target_summary_reaches_the_operator_through_the_job_message():
    message = JobMessage.success(summary("avx2", "int8"))
    read = JobMessage.model_validate(json.loads(json.dumps(message.to_wire())))
    assert read.result.status_fields()["machine"] == "AMD EPYC (capped at AVX2)"


def test_the_gauges_carry_the_target_and_a_restart_brings_back_every_target():
    body = launched(document())
    for name, pick in (("avx2", "ort-int8"), ("native", "ov-int8")):
        body["status"] |= targets.target_finished(body, 3, 0, name, JobOutcome(SUCCEEDED, "Completed", result=summary(name, pick)))
    metrics = OperatorMetrics()
    metrics.record_run("team", "fleet", ModelOptimizationStatus.model_validate(body["status"]))
    sample = metrics.registry.get_sample_value
    for name, pick in (("avx2", "ort-int8"), ("native", "ov-int8")):
        assert sample("kompress_best_speedup_ratio", {"namespace": "team", "name": "fleet", "target": name, "candidate": pick}) == 3.0
    metrics.forget("team", "fleet", "avx2")
    assert sample("kompress_best_speedup_ratio", {"namespace": "team", "name": "fleet", "target": "avx2", "candidate": "ort-int8"}) is None
    assert sample("kompress_best_speedup_ratio", {"namespace": "team", "name": "fleet", "target": "native", "candidate": "ov-int8"})
    metrics.forget("team", "fleet")
    assert sample("kompress_best_speedup_ratio", {"namespace": "team", "name": "fleet", "target": "native", "candidate": "ov-int8"}) is None


def test_a_re_run_starts_every_target_afresh():
    from kompress_operator import decisions

    body = launched(document())
    for name in ("avx2", "native"):
        body["status"] |= targets.target_finished(body, 3, 0, name, JobOutcome(SUCCEEDED, "Completed", result=summary(name, "int8")))
    queued = decisions.rerun(body, 3, 0, Transition(QUEUED, "Scheduled", "the schedule"), False, {})
    body["status"] |= queued
    assert body["status"]["phase"] == QUEUED and body["status"]["reoptimization"]["runs"] == 1
    again = targets.launched(body, 3, {"avx2": "fleet-avx2-g3-r1", "native": "fleet-native-g3-r1"}, False, "again")
    assert again["targetsDone"] == "0/2" and [(t["phase"], t["job"]) for t in again["targets"]] == [
        (RUNNING, "fleet-avx2-g3-r1"), (RUNNING, "fleet-native-g3-r1")]
    assert "best" not in again["targets"][0]  # the last run's pick is in its promotion and report, not here
    assert RunRef("team", "fleet", 3, rerun=1, target="avx2").job_name() == "fleet-avx2-g3-r1"


def test_a_budget_longer_than_the_deadline_a_run_gets_is_refused_with_the_way_out():
    settings = OperatorSettings(storage_locations=("*",), default_active_deadline_seconds=3600, max_active_deadline_seconds=7200)
    with pytest.raises(policy.PolicyViolation, match=r"spec.budget.duration: 2h is not shorter than the deadline a run gets "
                                                     r"in namespace team \(3600s\): set spec.job.activeDeadlineSeconds above it"):
        policy.enforce(spec_of(document([], budget={"duration": "2h"})), settings, "team")
    policy.enforce(spec_of(document([], budget={"duration": "30m"})), settings, "team")


def test_forgetting_a_resource_drops_every_targets_series_a_promotion_without_a_pick_included():
    from kompress_jobs.spec.status import TargetStatus

    metrics = OperatorMetrics()
    kept = TargetStatus.model_validate({"name": "avx2", "phase": "Succeeded", "promotion": {
        "decision": "Kept", "reason": "NoCandidate", "promotedAt": "2026-01-01T00:00:00Z"}})
    metrics.record_best("team", "fleet", kept, target="avx2")
    labels = {"namespace": "team", "name": "fleet", "target": "avx2"}
    assert metrics.registry.get_sample_value("kompress_promoted_timestamp_seconds", labels) == 1767225600
    metrics.forget("team", "fleet")
    assert metrics.registry.get_sample_value("kompress_promoted_timestamp_seconds", labels) is None
