# syntax=docker/dockerfile:1
# The CPU job image: the optimization pipeline with torch (CPU wheel) and ONNX Runtime.
# The operator runs it as `kompress job`. Build from the repository root: scripts/build-images
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY jobs/ jobs/
COPY operator/ operator/
COPY scripts/build-llama-wheel scripts/build-llama-tools scripts/
# llama.cpp is compiled from source (no wheel on PyPI) with its CPU kernels as run-time variants, never
# for the build machine's CPU: a fleet's nodes differ, and each loads the best variant it has
RUN mkdir -p /wheels && cp "$(scripts/build-llama-wheel /tmp/llama-wheel)"/*.whl /wheels/
# The CPU wheel index first: the default index's torch for Linux carries several GB of CUDA.
RUN pip wheel --no-cache-dir --wheel-dir /wheels --find-links /wheels \
        --extra-index-url https://download.pytorch.org/whl/cpu ".[job,llama,edge]"
# llama.cpp's llama-imatrix and llama-quantize (importance-matrix quantization), from the same llama.cpp
RUN scripts/build-llama-tools /usr/local/llama-tools

FROM python:3.11-slim
# Apache TVM links each library it compiles (and each tuning candidate) with a C++ compiler
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels "kompress[job,llama,edge]"
COPY --from=build /usr/local/llama-tools /usr/local/llama-tools
# optimum-intel's OpenVINO exporter pins an older transformers: a folder of its own that only the
# exporter's process reads (jobs/kompress_jobs/llm/openvino_export.py)
COPY requirements/openvino-exporter.txt /tmp/
RUN pip install --no-cache-dir --no-deps --target /usr/local/openvino-exporter -r /tmp/openvino-exporter.txt
# litert-torch (LiteRT's converter) pins an older pydantic: a folder of its own too (passes/litert.py)
COPY requirements/litert-converter.txt /tmp/
RUN pip install --no-cache-dir --no-deps --target /usr/local/litert-converter -r /tmp/litert-converter.txt
# The example model and data, so a sample can run with nothing uploaded (deploy/samples/).
COPY examples/ /opt/kompress/examples/
ENV MPLBACKEND=Agg
USER 65532:65532
WORKDIR /scratch
ENTRYPOINT ["kompress"]
CMD ["job"]
