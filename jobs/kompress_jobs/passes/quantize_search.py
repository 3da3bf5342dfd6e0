"""AutoQuantize's search (auto_quantize.py holds its settings and the pass): every configuration
that matters tried on the validation split and timed against the pass's input; where none keeps
the goal, the most sensitive operators kept in FP32, one more at a time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import PassError
from ..measurement.hardware import cpu_lacks
from ..measurement.ties import SIZE_TIE, pick_within_ties
from ..modelfile import ModelFile
from ..spec.sources import ModelFormat
from .auto_quantize import DYNAMIC_SETTINGS, OPENVINO, OPENVINO_SETTINGS, ORT, STATIC_SETTINGS, QuantizationMethod
from .base import PassContext


@dataclass
class Trial:
    number: int
    runtime: str
    method: str
    settings: dict[str, Any]
    fallback: list[str] = field(default_factory=list)
    model: ModelFile | None = None
    metric: float | None = None
    drop: float | None = None
    fidelity: dict[str, float] = field(default_factory=dict)
    p50_ms: float | None = None
    speedup: float | None = None
    verdict: str = ""

    @property
    def passes(self) -> bool:
        return self.verdict == "meets the goal"

    def record(self) -> dict[str, Any]:
        return {"number": self.number, "runtime": self.runtime, "method": self.method, "settings": self.settings,
                "fallbackNodes": self.fallback, "metric": self.metric, "drop": self.drop, "fidelity": self.fidelity,
                "p50Ms": self.p50_ms, "speedupVsInput": self.speedup,
                "sizeBytes": self.model.size_bytes if self.model else None, "verdict": self.verdict}


def choose_passing(passing: list[Trial], tie_tolerance: float) -> Trial:
    """The fastest trial that keeps the goal; within the tie tolerance (each trial is timed against its
    input, not against the others, so small gaps are noise) the smaller, then the more faithful: the
    order the selection ranks candidates in."""
    return pick_within_ties(passing, [(lambda t: t.p50_ms, lambda best: best * tie_tolerance),
                                      (lambda t: float(t.model.size_bytes), lambda best: best * SIZE_TIE),
                                      (lambda t: t.drop, lambda best: 0.0)])


class SteeredSearch:
    def __init__(self, spec, model: ModelFile, ctx: PassContext):
        from ..measurement.selection import primary_batch_size

        self.spec, self.model, self.ctx = spec, model, ctx
        self.limit = ctx.goals.max_accuracy_drop
        self.batch = primary_batch_size(ctx.goals, ctx.benchmark)
        self.trials: list[Trial] = []
        self.ranking: list = []
        self.started = time.monotonic()
        self.stop_reason = "every configuration was tried"
        self.notes: list[str] = []

    # --- the search ----------------------------------------------------------------------

    def run(self) -> ModelFile:
        from .quantize import preprocess

        self._prepare()
        self.source, _ = preprocess(self.model, self.ctx)
        for runtime, method, settings in self._configurations():
            if not self._budget_left():
                break
            self._try(runtime, method, settings)
        if not any(t.passes for t in self.trials) and self._budget_left() and self.spec.max_fallback_nodes:
            self._fall_back()
        return self._choose()

    def _configurations(self):
        """ONNX Runtime's and OpenVINO's configurations side by side: the pick is the fastest that keeps the goal."""
        runtimes = [r.value for r in self.spec.runtimes]
        if OPENVINO in runtimes and not self._has_openvino():
            runtimes.remove(OPENVINO)
            self.notes.append("OpenVINO configurations skipped: openvino and nncf are not installed")
        if ORT in runtimes:
            for method in (m for m in self.spec.methods if m is not QuantizationMethod.BF16):  # BF16: OpenVINO's
                table = DYNAMIC_SETTINGS if method is QuantizationMethod.DYNAMIC else STATIC_SETTINGS
                for settings in table:
                    yield ORT, method.value, dict(settings)
        if OPENVINO in runtimes and QuantizationMethod.STATIC in self.spec.methods:
            for settings in OPENVINO_SETTINGS:
                yield OPENVINO, QuantizationMethod.STATIC.value, dict(settings)
        if OPENVINO in runtimes and QuantizationMethod.BF16 in self.spec.methods:
            lacking = cpu_lacks("bf16")
            if lacking:
                self.notes.append(f"BF16 skipped: {lacking}")
            else:
                yield OPENVINO, QuantizationMethod.BF16.value, {"inferencePrecision": "BF16"}

    @staticmethod
    def _has_openvino() -> bool:
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf"))

    def _budget_left(self) -> bool:
        if len(self.trials) >= self.spec.max_trials:
            self.stop_reason = f"trial budget reached ({self.spec.max_trials})"
            return False
        if time.monotonic() - self.started > self.spec.timeout_seconds:
            self.stop_reason = f"time budget reached ({self.spec.timeout_seconds} s)"
            return False
        return True

    def _fall_back(self) -> None:
        """Keep the worst nodes of the most faithful configuration that still pays in FP32, one more each trial."""
        from .sensitivity import quantizable_nodes, rank_nodes

        # ONNX Runtime trials only: the ranking and the exclusion list speak of its node names.
        measured = [t for t in self.trials if t.model is not None and t.runtime == ORT]
        if not measured:
            return
        faster = [t for t in measured if (t.speedup or 0) > 1] or measured
        base = min(faster, key=lambda t: t.drop)
        nodes = quantizable_nodes(self.source, self._op_types(base))
        feeds = [self._rows(i, i + 8) for i in range(0, min(32, len(self.validation)), 8)]
        self.ranking = rank_nodes(self.source, base.model.path, nodes, feeds, self.ctx.threads)
        self.ctx.log(f"falling back on trial {base.number}: {len(self.ranking)} nodes ranked by added error, "
                     f"worst {', '.join(e.node for e in self.ranking[:3])}")
        for count in range(1, min(self.spec.max_fallback_nodes, len(self.ranking)) + 1):
            if not self._budget_left():
                return
            trial = self._try(ORT, base.method, base.settings, [e.node for e in self.ranking[:count]])
            if trial.passes:
                self.stop_reason = f"the goal holds with {count} node(s) in FP32"
                return
        self.stop_reason = f"the goal did not hold with up to {min(self.spec.max_fallback_nodes, len(self.ranking))} node(s) in FP32"

    def _choose(self) -> ModelFile:
        passing = [t for t in self.trials if t.passes]
        if passing:
            self.chosen = choose_passing(passing, self.ctx.benchmark.tie_tolerance)
        else:
            measured = [t for t in self.trials if t.model is not None]
            if not self.trials:
                raise PassError("no configuration could be tried here: " + "; ".join(self.notes or ["the search was empty"]))
            if not measured:
                raise PassError("no configuration could be built: "
                                + "; ".join(f"trial {t.number}: {t.verdict}" for t in self.trials)[:400])
            self.chosen = min(measured, key=lambda t: (t.drop, t.p50_ms))
            self.ctx.log(f"no configuration met the goal; the closest (trial {self.chosen.number}, drop "
                         f"{self.chosen.drop:.3g}) is the candidate, for the benchmark to judge")
        self.ctx.log(f"chose trial {self.chosen.number}: {self.chosen.runtime} {self.chosen.method} {self.chosen.settings}, "
                     f"{len(self.chosen.fallback)} node(s) in FP32, drop {self.chosen.drop:.3g}, {self.chosen.speedup:.2f}× its input")
        return self.chosen.model

    # --- one trial -----------------------------------------------------------------------

    def _prepare(self) -> None:
        from ..data import rows
        from ..measurement.quality import Scorer, predict
        from ..runtimes import OrtRunner, make_runner

        split = self.ctx.dataset.split(self.spec.validation_split)
        if self.ctx.task.needs_labels and split.labels is None:
            raise PassError(f"validation split {self.spec.validation_split!r} has no labels for a {self.ctx.task.type.value} task")
        self.validation = split.take(self.spec.validation_samples)
        self._rows = lambda start, stop: rows(self.validation.inputs, start, stop)
        self.reference = OrtRunner(self.model, threads=self.ctx.threads)  # what a trial must be faster than
        # Drops count from the baseline, as the final selection's do: after a lossy pass (pruning,
        # compression) the goal's budget is what is left of it, not a fresh one.
        judge_by = self.ctx.baseline or self.model
        scoring = self.reference if judge_by is self.model else make_runner(judge_by, threads=self.ctx.threads, input_names=self.ctx.input_names)
        outputs = predict(scoring, self.validation, self.ctx.benchmark.evaluation_batch_size)
        self.scorer = Scorer(self.ctx.task, self.ctx.goals.accuracy_drop_mode, self.validation, outputs)

    def _try(self, runtime: str, method: str, settings: dict, fallback: list[str] | None = None) -> Trial:
        trial = Trial(len(self.trials) + 1, runtime, method, settings, list(fallback or []))
        self.trials.append(trial)
        try:
            trial.model = self._quantize(trial)
            self._judge(trial)
        except Exception as exc:  # one failing configuration must not end the search
            trial.model, trial.verdict = None, f"failed: {str(exc).splitlines()[0][:200]}"
        self.ctx.log(f"trial {trial.number} {runtime} {method} {_show(settings)}"
                     + (f" +{len(trial.fallback)} FP32" if trial.fallback else "")
                     + (f": drop {trial.drop:.3g}, {trial.speedup:.2f}×" if trial.drop is not None else "")
                     + f" → {trial.verdict}")
        return trial

    def _quantize(self, trial: Trial) -> ModelFile:
        from .openvino import nncf_int8, read_model, save
        from .quantize import (
            calibration_reader,
            calibration_rows,
            dynamic_int8,
            static_int8,
        )

        settings, fallback = trial.settings, trial.fallback
        if trial.method == QuantizationMethod.BF16.value:  # the IR as it is, computed in BF16 by OpenVINO
            return save(read_model(self.model), self.ctx.output_dir / f"trial-{trial.number}.xml", "bf16")
        if trial.runtime == OPENVINO:
            return nncf_int8(self.model, self.ctx, self.ctx.output_dir / f"trial-{trial.number}.xml",
                             model_type=settings["modelType"], preset=settings["preset"], samples=self.spec.calibration_samples)
        output = self.ctx.output_dir / f"trial-{trial.number}.onnx"
        if trial.method == QuantizationMethod.DYNAMIC.value:
            dynamic_int8(self.source, output, per_channel=settings["perChannel"], reduce_range=settings["reduceRange"],
                         nodes_to_exclude=fallback)
        else:
            samples, batch_size = calibration_rows(self.ctx, self.spec.calibration_samples)
            static_int8(self.source, output, calibration_reader(samples, batch_size), quant_format=settings["quantFormat"],
                        per_channel=settings["perChannel"], reduce_range=False, activation_type=settings["activationType"],
                        weight_type="QInt8", calibration_method=settings["calibrationMethod"], op_types=settings["opTypes"],
                        nodes_to_exclude=fallback)
        return ModelFile(output, ModelFormat.ONNX, "int8")

    def _judge(self, trial: Trial) -> None:
        from ..measurement.benchmark import measure_latency
        from ..spec.goals import Benchmark
        from ..measurement.quality import predict
        from ..runtimes import make_runner

        runner = make_runner(trial.model, threads=self.ctx.threads)
        outputs = predict(runner, self.validation, self.ctx.benchmark.evaluation_batch_size)
        trial.metric, trial.drop, trial.fidelity = self.scorer.judge(outputs)
        quick = Benchmark(batch_sizes=[self.batch], warmup=5, iterations=30, rounds=3, threads=self.ctx.threads)
        latency = measure_latency({"input": self.reference, "trial": runner}, self.validation.inputs, quick)
        trial.p50_ms = latency["trial"][self.batch].p50_ms
        trial.speedup = latency["input"][self.batch].p50_ms / trial.p50_ms
        if trial.speedup < 1 - self.ctx.benchmark.tie_tolerance:
            trial.verdict = "slower than its input"
        elif self.limit is not None and trial.drop > self.limit:
            trial.verdict = f"breaks the goal (drop {trial.drop:.3g} > {self.limit:g})"
        else:
            trial.verdict = "meets the goal"

    def _op_types(self, trial: Trial) -> set[str]:
        from onnxruntime.quantization.registry import (
            IntegerOpsRegistry,
            QDQRegistry,
            QLinearOpsRegistry,
        )

        if trial.settings.get("opTypes"):
            return set(trial.settings["opTypes"])
        if trial.method == QuantizationMethod.DYNAMIC.value:
            return set(IntegerOpsRegistry)
        return set(QDQRegistry if trial.settings["quantFormat"] == "QDQ" else QLinearOpsRegistry)

    # --- the record ----------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        chosen = getattr(self, "chosen", None)
        return {
            "search": "AutoQuantize",
            "goal": {"maxAccuracyDrop": self.limit, "metric": self.ctx.task.metric.value,
                     "mode": self.ctx.goals.accuracy_drop_mode.value},
            "validationSplit": self.spec.validation_split,
            "validationRows": len(self.validation) if hasattr(self, "validation") else 0,
            "batchSize": self.batch,
            "seconds": round(time.monotonic() - self.started, 1),
            "stoppedBecause": self.stop_reason,
            "notes": self.notes,
            "chosenTrial": chosen.number if chosen else None,
            "sensitivity": [{"node": e.node, "opType": e.op_type, "addedError": e.added_error, "outputError": e.output_error}
                            for e in self.ranking[:20]],
            "trials": [t.record() for t in self.trials],
        }


def _show(settings: dict) -> str:
    return ", ".join(f"{k}={'MatMul/Gemm' if k == 'opTypes' and v else ('all' if k == 'opTypes' else v)}" for k, v in settings.items())
