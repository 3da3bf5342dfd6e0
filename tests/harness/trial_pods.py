"""Worker Pods without a cluster: `kompress job --tuning-worker` processes run the way the Job
controller runs a tuning Job's Pods (completions = parallelism = p; a Pod that dies is replaced).
For the job-side tests and benchmarks/tuning_parallelism.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kompress_jobs.spec.contract import CONTRACT_VERSION, JobEnv


def job_env(document: dict, storage: str | None, log: Path, worker: str) -> dict[str, str]:
    env = {**os.environ, JobEnv.RESOURCE.value: json.dumps(document), JobEnv.CONTRACT_VERSION.value: str(CONTRACT_VERSION),
           JobEnv.RUN_ID.value: "team-run-g1", JobEnv.TERMINATION_LOG.value: str(log), "HOSTNAME": worker}
    if storage:
        env[JobEnv.STUDY_STORAGE.value] = storage
    return env


def worker(document: dict, storage: str | None, folder: Path, number: int) -> tuple[subprocess.Popen, Path]:
    log = folder / f"worker-{number}.log"
    process = subprocess.Popen([sys.executable, "-m", "kompress.cli", "job", "--tuning-worker"],
                               env=job_env(document, storage, log, f"worker-{number}"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, log


def run_tuning_job(document: dict, storage: str, folder: Path, kill_one=None) -> list[dict]:
    """What the Job controller does with completions = parallelism = p: keep p worker Pods running
    until p of them succeeded; a Pod that dies is replaced. `kill_one(running)` may kill one
    worker, once (it returns True when it did). Returns every finished worker's message."""
    wanted = document["spec"]["tuning"]["parallelism"]
    running, messages, started = [], [], 0
    while len(messages) < wanted:
        while len(running) + len(messages) < wanted:
            running.append(worker(document, storage, folder, started))
            started += 1
        if kill_one and kill_one(running):
            kill_one = None
        for process, log in list(running):
            if process.poll() is None:
                continue
            running.remove((process, log))
            output = process.stdout.read()
            if process.returncode == 0:
                messages.append(json.loads(log.read_text()))
            else:
                assert process.returncode == -signal.SIGKILL, output  # only the killed one may fail
        time.sleep(0.1)
    return messages
