"""Apache TVM: an ONNX model imported by Relax, its operators tuned for this CPU by MetaSchedule
within a trial budget, and compiled by LLVM into a library with one function per batch size (its
weights kept beside it, pre-packed once at load), run by TVM's virtual machine like every other
candidate.

The LLVM target is the CPU the Job landed on (LLVM's name for it), or the instruction-set level of
the target's cap (spec.targets[].maxCpuIsa), so a capped target's library holds no instruction
above its cap. Tuning records are the slow part: they are kept in the artifact store under the
resource (`kept/tvm/<CPU>/`) and a later run on the same CPU model starts from them (with
`trials: 0` it compiles from them alone). Under spec.budget, tuning takes at most half of what is
left of the budget when the pass starts (the passes after it, compiling and the benchmark need the
rest): it goes in rounds of a few trials a task and stops after the round that passes its share.
Import, tuning and compilation run in a process of their own (TVM's tuner starts worker processes;
a crash there costs this candidate only)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import time
from typing import Literal

from pydantic import Field

from ..child_python import last_line, run_python
from ..errors import PassError
from ..formats.tvm import LIBRARY, MANIFEST, PARAMS, vouch
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from ..spec.targets import CpuIsa
from .base import OptimizationPass, PassContext, register
from .settings import PassSettings

_COMPILERS = ("g++", "clang++", "c++")  # what TVM's linker step looks for (tvm.support.cc), C++ first
RECORDS = ("database_workload.json", "database_tuning_record.json")  # MetaSchedule's JSON database
# An error is said on the last line, and the process ends before TVM's destructors log warnings after it.
_BUILD = """
import json, os, sys
from kompress_jobs.passes.tvm import build
try:
    print(json.dumps(build(json.loads(sys.argv[1]))), flush=True)
except Exception as exc:
    said = [line.strip() for line in str(exc).splitlines() if line.strip()]
    print(f"{type(exc).__name__}: {said[-1] if said else ''}", file=sys.stderr, flush=True)
    os._exit(3)
"""
# A tuning candidate's run waits this long (TVM's 30 s lose candidates on a busy 2-core node)
_PATIENCE_S = 600
BUDGET_SHARE = 0.5  # of what is left of spec.budget when the pass starts, for tuning
ROUND_TRIALS = 16  # under a budget, trials a task per round; the clock is read between rounds
# LLVM's instruction-set levels for a capped target: nothing above the cap, whatever the host has
_CAPPED_TARGET = {
    CpuIsa.AVX2: ("x86-64-v3", ""),
    CpuIsa.AVX512_CORE: ("x86-64-v4", ""),
    CpuIsa.AVX512_CORE_VNNI: ("x86-64-v4", "+avx512vnni"),
    CpuIsa.AVX512_CORE_BF16: ("x86-64-v4", "+avx512vnni,+avx512bf16"),
}


class TvmPass(PassSettings):
    """A library compiled by Apache TVM for this CPU, its operators tuned by MetaSchedule."""

    type: Literal["TVM"]
    trials: int = Field(64, ge=0, le=10_000, description="MetaSchedule trials per tuning task (one fused operator "
                        "of one shape) that no earlier run of this resource tuned on this CPU; a task with kept records "
                        "is compiled from them. 0: tune nothing (refused when a task has no kept record). Under "
                        "spec.budget, tuning stops after the round that passes half of what is left of it.")
    batch_sizes: list[int] | None = Field(None, min_length=1, max_length=8, description="Batch sizes the library "
                                          "is tuned and compiled for (each adds its tasks); a batch of another "
                                          "size runs in chunks of these. Default: the benchmark's.")


def llvm_target(host_cpu: str, cap: CpuIsa | None, threads: int) -> dict:
    """TVM's target: the host CPU by LLVM's name, or the cap's instruction-set level."""
    mcpu, mattr = _CAPPED_TARGET.get(cap, (host_cpu, "")) if cap else (host_cpu, "")
    return {"kind": "llvm", "mcpu": mcpu, "num-cores": threads, **({"mattr": mattr.split(",")} if mattr else {})}


def records_folder(cpu_model: str, target: dict) -> str:
    """Where a CPU's tuning records are kept: its model name and the target, which records only fit."""
    slug = re.sub(r"[^a-z0-9]+", "-", cpu_model.lower()).strip("-")[:60] or "cpu"
    return f"tvm/{slug}-{hashlib.sha256(json.dumps(target, sort_keys=True).encode()).hexdigest()[:12]}"


@register(TvmPass)
class Tvm(OptimizationPass):
    technique = "tvm"
    output_format = ModelFormat.TVM

    def not_applicable_reason(self) -> str | None:
        if importlib.util.find_spec("tvm") is None:
            return "apache-tvm is not installed (the job image's extra `edge`)"
        if not any(shutil.which(cc) for cc in _COMPILERS):
            return f"TVM links the library it compiles with a C++ compiler, and none is on PATH ({', '.join(_COMPILERS)})"
        return None

    def run(self, model: ModelFile, ctx: PassContext) -> ModelFile:
        from ..measurement.hardware import cpu_cap, cpu_info

        sizes = sorted(set(self.spec.batch_sizes or ctx.batch_sizes))
        target = llvm_target(_host_cpu(), cpu_cap(), ctx.threads)
        kept, records = records_folder(cpu_info()[0], target), ctx.output_dir / "tuning-records"  # not uploaded: kept below
        records.mkdir()
        restored = ctx.kept is not None and all([ctx.kept.get(f"{kept}/{name}", records / name) for name in RECORDS])
        if self.spec.trials == 0 and not restored:
            raise PassError(f"trials is 0, so this pass compiles from kept tuning records only, and no earlier run of this "
                            f"resource kept any for this CPU ({kept}); set trials to 1 or more to tune")
        share = ctx.seconds_left() * BUDGET_SHARE
        ctx.log(f"{'with the tuning records kept for this CPU, ' if restored else ''}tuning up to {self.spec.trials} trials "
                f"per untuned task for batch sizes {sizes} on {target['mcpu']}, in a process of its own"
                + (f", in rounds until {share:.0f} s have passed (half of what is left of spec.budget)"
                   if share != float("inf") else ""))
        folder = ctx.output_dir / "model.tvm"
        folder.mkdir()
        rows = _rows(ctx.example_inputs, ctx.input_names)
        job = {"model": str(model.path.resolve()), "shapes": {name: row["shape"] for name, row in zip(ctx.input_names, rows)},
               "sizes": sizes, "target": target, "trials": self.spec.trials, "records": str(records),
               "seconds": None if share == float("inf") else share, "roundTrials": ROUND_TRIALS,
               "library": str(folder / LIBRARY), "params": str(folder / PARAMS)}
        done = run_python(code=_BUILD, args=[json.dumps(job)], env={"TVM_NUM_THREADS": str(ctx.threads)})
        if done.returncode != 0 or not (folder / LIBRARY).is_file():
            raise PassError(f"TVM could not tune and compile the model: {last_line(done)}")
        built = json.loads(done.stdout.strip().splitlines()[-1])
        if ctx.kept is not None and built["trials"]:
            for name in RECORDS:
                ctx.kept.put(records / name, f"{kept}/{name}")
        vouch(folder)
        (folder / MANIFEST).write_text(json.dumps({"target": target, "batchSizes": sizes, "inputs": list(ctx.input_names),
                                                   "rows": rows, "outputs": built["outputs"]}, indent=1))
        self.details = {"target": target, "tasks": built["tasks"], "tuned": built["tuned"], "trials": built["trials"],
                        "records": kept, "recordsReused": restored, "budgetStop": built["budgetStop"]}
        ctx.log(f"tuned {built['tuned']} of {built['tasks']} tasks ({built['trials']} trials), compiled for {target['mcpu']}"
                + (f"; tuning stopped at its share of spec.budget ({built['budgetStop']['seconds']:.0f} s), "
                   f"{built['budgetStop']['trialsShort']} trials a task short of {self.spec.trials}" if built["budgetStop"] else ""))
        return ModelFile(folder, ModelFormat.TVM, "fp32")

    @classmethod
    def report_section(cls, name: str, details: dict) -> list[str]:
        kept = details["tasks"] - details["tuned"]
        stop = details.get("budgetStop")
        return [f"- **{name}**: TVM for `{details['target']['mcpu']}`: {details['tasks']} tuning tasks, {details['tuned']} "
                f"tuned now ({details['trials']} trials), {kept} compiled from records an earlier run kept "
                f"(`kept/{details['records']}`)."
                + (f" Tuning stopped at its share of spec.budget ({stop['seconds']:.0f} s), {stop['trialsShort']} trials a "
                   "task short." if stop else "")]


def _host_cpu() -> str:
    """LLVM's name for this CPU (znver4, sapphirerapids, ...), asked of TVM in a child: TVM never loads
    into the pipeline's process before the library does."""
    done = run_python(code="import tvm; print(tvm.target.codegen.llvm_get_system_cpu())")
    if done.returncode != 0:
        raise PassError(f"TVM could not name this CPU: {last_line(done)}")
    return done.stdout.strip().splitlines()[-1]


def _rows(batch: dict, names: tuple[str, ...]) -> list[dict]:
    """Each input's row shape and type, in the model's order (what the runtime feeds it)."""
    return [{"shape": list(batch[name].shape[1:]), "dtype": str(batch[name].dtype)} for name in names]


def build(job: dict) -> dict:
    """In the child: import each batch size's graph, tune the tasks, compile one library."""
    import numpy as np
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.onnx import from_onnx
    from tvm.s_tir import meta_schedule as ms

    graph = onnx.load(job["model"])
    merged, params = tvm.IRModule({}), None
    for size in job["sizes"]:
        shapes = {name: [size, *dims] for name, dims in job["shapes"].items()}
        module, detached = detach_params(from_onnx(graph, shape_dict=shapes, keep_params_in_input=True))
        params = detached["main"]  # the graph's initializers, in one order whatever the batch size
        merged[f"main_b{size}"] = module["main"].with_attr("global_symbol", f"main_b{size}")
    target, records, trials = tvm.target.Target(job["target"]), job["records"], job["trials"]
    with target:  # static_shape_tuning's steps, with a tuner whose builder and runner wait for a busy machine
        prepared = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(),
                                             relax.get_pipeline("zero"), relax.transform.AttachAttrLayoutFreeBuffers()])(merged)
        tasks = ms.relax_integration.extract_tasks(prepared, target)
    database = ms.database.JSONDatabase(work_dir=records)
    before = len(database.get_all_tuning_records())
    untuned = [t for t in tasks if database.query_tuning_record(t.dispatched[0], target, t.task_name) is None]
    if untuned and trials == 0:
        raise SystemExit(f"the kept tuning records miss {len(untuned)} of {len(tasks)} tasks "
                         f"({', '.join(t.task_name for t in untuned[:3])}); set trials to 1 or more to tune them")
    # A task an earlier run tuned is not tuned again: its kept records are its schedule. Under a
    # budget, rounds of a few trials a task (each round's search starts from the best records so far).
    started, left, stop = time.monotonic(), trials if untuned else 0, None
    while left > 0:
        step = left if job["seconds"] is None else min(left, job["roundTrials"])
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(untuned, work_dir=records, seed=trials - left)
        ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=records, max_trials_global=step * len(untuned),
                      max_trials_per_task=step, num_trials_per_iter=min(step, 64), builder=_in_process_builder(),
                      runner=ms.runner.LocalRunner(timeout_sec=_PATIENCE_S), database=database,
                      task_scheduler="round-robin")
        left -= step
        if left > 0 and job["seconds"] is not None and time.monotonic() - started >= job["seconds"]:
            stop = {"seconds": job["seconds"], "trialsShort": left}
            break
    with target:
        lowered = tvm.transform.Sequential([relax.transform.MetaScheduleApplyDatabase(records),
                                            relax.transform.SplitLayoutRewritePreproc(), relax.transform.LiftTransformParams(),
                                            relax.transform.FoldConstant()])(prepared)
    tvm.compile(lowered, target=target).export_library(job["library"])
    np.savez(job["params"], *[p.numpy() for p in params])
    return {"tasks": len(tasks), "tuned": len(untuned), "trials": len(database.get_all_tuning_records()) - before,
            "outputs": len(graph.graph.output), "budgetStop": stop}


def _in_process_builder():
    """MetaSchedule's builder, building each candidate in this (already isolated) process: TVM's
    LocalBuilder starts a pool of workers for every batch, each importing TVM, which cost about 40 s
    a round on 2 cores against a few seconds of compiling."""
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export
    from tvm.ir.utils import derived_object

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs):
            results = []
            for item in build_inputs:
                try:
                    results.append(BuilderResult(default_export(default_build(item.mod, item.target, None)), None))
                except Exception as exc:  # one candidate schedule that fails to build; the tuner goes on
                    results.append(BuilderResult(None, f"{type(exc).__name__}: {str(exc)[:300]}"))
            return results

    return InProcessBuilder()
