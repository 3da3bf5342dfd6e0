# syntax=docker/dockerfile:1
# The GPU job image: NVIDIA's TensorRT container (CUDA, cuDNN and the `tensorrt` Python package
# matched to each other), torch with CUDA, and ONNX Runtime's GPU build. What each GPU pass needs,
# and what it says where that is missing (the report's fingerprint lists what was there):
#   TensorRT        tensorrt                       carried (the base image)
#   OnnxRuntimeGpu  onnxruntime-gpu (CUDA and TensorRT execution providers)   carried
#   TorchRuntime    torch with CUDA; torch.compile also a C compiler (gcc)    carried (the base image has gcc)
#   energy          nvidia-ml-py (NVML)            carried
#   TorchAoQuantize torchao (a dependency of the job extra); Float8 also a GPU of compute capability ≥ 8.9
# A PyTorch CUDA image without TensorRT or onnxruntime-gpu still runs TorchRuntime; the other two
# passes then report NotApplicable with the reason, and the run goes on.
# Build from the repository root: scripts/build-images
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:25.01-py3
FROM ${TENSORRT_IMAGE}
WORKDIR /src
COPY pyproject.toml README.md ./
COPY jobs/ jobs/
COPY operator/ operator/
# onnxruntime-gpu replaces the CPU build that the job extra names (same module, CUDA and
# TensorRT execution providers added); nvidia-ml-py reads the GPU's energy counter for reports.
RUN pip install --no-cache-dir ".[job]" \
    && pip uninstall -y onnxruntime \
    && pip install --no-cache-dir "onnxruntime-gpu>=1.20" "nvidia-ml-py>=12" \
    && rm -rf /src
COPY examples/ /opt/kompress/examples/
ENV MPLBACKEND=Agg
# The TensorRT image has no unprivileged user of its own; the Job's securityContext runs as 65532.
USER 65532:65532
WORKDIR /scratch
ENTRYPOINT ["kompress"]
CMD ["job"]
