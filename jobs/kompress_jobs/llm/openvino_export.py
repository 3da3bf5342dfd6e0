"""optimum-intel's OpenVINO exporter for causal language models (a stateful IR: the key/value cache
lives inside the model), run in a process of its own. optimum-intel 2.2 pins transformers < 5.6 and
fails against the newer transformers the job runs (it passes the cache by its old name), so the
exporter and the transformers it needs are installed in a folder of their own (`exporter_path`,
from requirements/openvino-exporter.txt) that only this process puts ahead on its path. The
exporter reads a checkpoint folder kompress wrote (safetensors, no remote code, offline) and writes
the model only: the tokenizer comes from the checked source, never from the older transformers,
whose GGUF tokenizers do not survive a round trip."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..child_python import last_line, run_python
from ..errors import PassError

EXPORTER_ENV = "KOMPRESS_OPENVINO_EXPORTER"

# FP32 on every size: left alone, the exporter compresses models of 1 B parameters or more to INT8
_SCRIPT = """
import sys
from optimum.exporters.openvino import main_export
from optimum.intel.openvino.configuration import OVConfig
main_export(sys.argv[1], output=sys.argv[2], task="text-generation-with-past", stateful=True, framework="pt",
            library_name="transformers", local_files_only=True, trust_remote_code=False, convert_tokenizer=False,
            ov_config=OVConfig(dtype="fp32"))
"""


def exporter_path() -> Path:
    """Where the exporter is installed: $KOMPRESS_OPENVINO_EXPORTER, else `openvino-exporter` in the
    job's Python environment (scripts/setup-venv and the job image put it there)."""
    return Path(os.environ.get(EXPORTER_ENV) or Path(sys.prefix) / "openvino-exporter")


def exporter_missing() -> str | None:
    path = exporter_path()
    if not (path / "optimum" / "exporters" / "openvino").is_dir():
        return (f"optimum-intel's OpenVINO exporter is not installed in {path} (it needs a transformers of its own: "
                f"pip install --no-deps --target {path} -r requirements/openvino-exporter.txt, or set {EXPORTER_ENV})")
    return None


def export(checkpoint: Path, output: Path) -> Path:
    """The checkpoint folder as a stateful FP32 IR in `output`; returns the .xml. PassError with the
    exporter's last line when it fails."""
    from ..runtimes.openvino_causal_lm import XML

    reason = exporter_missing()
    if reason:
        raise PassError(reason)
    done = run_python(code=_SCRIPT, args=[str(checkpoint), str(output)], paths=[exporter_path()],
                      env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    xml = output / XML
    if done.returncode != 0 or not xml.is_file():
        raise PassError(f"optimum-intel's OpenVINO exporter failed on {checkpoint.name}: "
                        f"{last_line(done, f', no {XML} written')}")
    return xml
