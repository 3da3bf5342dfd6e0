"""A parallel study (`spec.tuning.parallelism` > 1): the study lives in a shared database
(study_storage.py); each worker Pod of the tuning Job runs trials until it is over
(`StudyWorker`), and the run's Job later reads its best trials (`StudyCollector`)."""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass

from .study_report import StopReason, count_trials, judged_and_running, judged_trials
from .study_storage import TrialSlot, open_storage
from .study import Study, TuningResult
from .trial_record import Attr, has


@dataclass
class WorkerRun:
    """What one worker Pod of a parallel study did: the trials it ran, why it stopped, and the
    study's counts as it left."""

    trials: list[int]
    stopped_because: str
    finished: int
    failed: int
    running: int


class StudyWorker(Study):
    """A worker Pod of the tuning Job. `attempt` names the Pod's attempt, so a restarted Job's
    timeout counts from the first start."""

    def __init__(self, *args, storage_url: str, attempt: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.storage_url, self.attempt = storage_url, attempt

    def work(self) -> WorkerRun:
        """A worker Pod of a parallel study: run trials until the study is over. While the trials
        running elsewhere would fill it, wait rather than leave: one of them may be dead, and its
        retry needs a worker (the heartbeat check fails it after three missed beats)."""
        import optuna

        self.scratch.mkdir(parents=True, exist_ok=True)
        salt = zlib.crc32(os.environ.get("HOSTNAME", str(os.getpid())).encode())
        storage = open_storage(self.storage_url, self.tuning.heartbeat_seconds)
        study = self._create(storage, self.tuning.seed + salt)
        started = study.user_attrs.get(f"attempt:{self.attempt}") or time.time()
        study.set_user_attr(f"attempt:{self.attempt}", started)
        self._scorer = self._reference_scorer()
        slot, mine = TrialSlot(storage, self.key), []
        while True:
            # Every change to the set of trials happens under the slot, a lost trial's retry too: a
            # trial inserted by one worker while another's commits could land out of id order, and
            # Optuna's trial cache never reads back a trial numbered below one it saw finish.
            slot.acquire()
            optuna.storages.fail_stale_trials(study)
            over = self._over(study, started)
            if over:
                slot.release()
                self.progress(f"tuning: study {self.key} is over ({over}); this worker ran {len(mine)} trial(s)")
                return WorkerRun(trials=mine, stopped_because=str(over), finished=judged_trials(study),
                                 failed=count_trials(study, "FAIL"), running=count_trials(study, "RUNNING"))
            judged, running = judged_and_running(study)
            if judged + running >= self.tuning.trials:
                slot.release()
                time.sleep(self.tuning.heartbeat_seconds)
                continue
            self.progress(f"tuning: a trial starts here: {judged} finished and {running} running of {self.tuning.trials}")
            self.trial_started = slot.release  # by the objective, once the trial exists
            try:
                study.optimize(self._objective, n_trials=1, catch=(Exception,), callbacks=[self._after_trial])
            except ValueError:  # Optuna refuses the result of a trial already failed
                if not self._declared_lost(study):
                    raise
            finally:
                slot.release()
            mine.append(self.current_trial)

    def _declared_lost(self, study) -> bool:
        """Whether this worker's trial was failed by another worker while it ran (its heartbeats
        came late, e.g. on an overloaded node): its retry is queued, so this worker goes on."""
        trial = next((t for t in study.get_trials(deepcopy=False) if t.number == self.current_trial), None)
        lost = trial is not None and trial.state.name == "FAIL" and not has(trial, Attr.ERROR)
        if lost:
            self.progress(f"tuning: trial {trial.number} was declared lost by another worker (heartbeats late); "
                          f"its result is dropped and a retry is queued")
        return lost


class StudyCollector(Study):
    """The run's Job after a parallel study: its best trials, read from the shared study."""

    def __init__(self, *args, storage_url: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.storage_url = storage_url

    def collect(self) -> TuningResult:
        import optuna

        self.scratch.mkdir(parents=True, exist_ok=True)
        storage = open_storage(self.storage_url, self.tuning.heartbeat_seconds)
        study = optuna.load_study(study_name=self.key, storage=storage)
        # The tuning Job is done, so a trial still "running" has no Pod left (a superseded spec's
        # Pod stopped mid-trial): lost, without waiting for its heartbeat to go stale.
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            try:
                storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # it finished just now after all
        self.stop_reason = self._over(study, None) or StopReason.job_ended(judged_trials(study), self.tuning.trials)
        self.progress(f"tuning: study {self.key}: {judged_trials(study)} trial(s) from {self.tuning.parallelism} parallel "
                      f"worker(s), {self.stop_reason}")
        best = self._best_trials(study)
        return TuningResult(self._best_candidates(best), self._report(study, best, 0))
