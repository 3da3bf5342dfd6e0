# syntax=docker/dockerfile:1
# The CPU job image: the optimization pipeline with torch (CPU wheel) and ONNX Runtime.
# The operator runs it as `kompress job`. Build from the repository root: scripts/build-images
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY jobs/ jobs/
COPY operator/ operator/
# The CPU wheel index first: the default index's torch for Linux carries several GB of CUDA.
RUN pip wheel --no-cache-dir --wheel-dir /wheels \
        --extra-index-url https://download.pytorch.org/whl/cpu ".[job]"

FROM python:3.11-slim
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels "kompress[job]"
# The example model and data, so a sample can run with nothing uploaded (deploy/samples/).
COPY examples/ /opt/kompress/examples/
ENV MPLBACKEND=Agg
USER 65532:65532
WORKDIR /scratch
ENTRYPOINT ["kompress"]
CMD ["job"]
