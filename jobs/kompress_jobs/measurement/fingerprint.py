"""The machine and library versions a measurement was taken on, so numbers can be compared honestly."""

from __future__ import annotations

import importlib.metadata
import os
import platform

from ..spec.wire import Record
from .hardware import cpu_cap, cpu_info

class CpuInfo(Record):
    model: str
    flags: list[str]  # the SIMD features that decide which kernels run (VNNI, AMX, ...)
    logical_cores: int | None
    usable_cores: int | None
    max_isa: str | None = None  # the target's cap (spec.targets[].maxCpuIsa): flags above it are left out


class GpuInfo(Record):
    name: str
    count: int
    cuda: str | None


class Fingerprint(Record):
    """The machine and library versions a measurement was taken on (fingerprint.py reads them)."""

    cpu: CpuInfo
    gpu: GpuInfo | None
    os: str
    python: str
    libraries: dict[str, str]



# CPU features that change how fast INT8 / FP16 kernels are.
_INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                      "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "f16c")
_LIBRARIES = ("kompress", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "numpy", "tensorrt", "torchao", "executorch",
              "llama-cpp-python", "ai-edge-litert", "apache-tvm",
              "nvidia-ml-py")


def machine_fingerprint() -> Fingerprint:
    cpu_model, flags = cpu_info()
    return Fingerprint(
        cpu=CpuInfo(model=cpu_model, flags=[flag for flag in _INTERESTING_FLAGS if flag in flags], logical_cores=os.cpu_count(),
                    usable_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                    **({"max_isa": cpu_cap().value} if cpu_cap() else {})),
        gpu=_gpu(),
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        libraries={name: version for name in _LIBRARIES if (version := _version(name))},
    )


def _gpu() -> GpuInfo | None:
    try:
        import torch

        if torch.cuda.is_available():
            return GpuInfo(name=torch.cuda.get_device_name(0), count=torch.cuda.device_count(), cuda=torch.version.cuda)
    except Exception:  # a broken CUDA install should not stop a CPU run
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
