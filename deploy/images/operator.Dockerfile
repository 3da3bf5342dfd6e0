# syntax=docker/dockerfile:1
# The operator: Kopf, the kubernetes client and prometheus-client; no torch, no ONNX Runtime, no
# numpy (those live in the job images: installing the operator never drags in a model runtime).
# Build from the repository root: scripts/build-images
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY jobs/ jobs/
COPY operator/ operator/
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[operator]"

FROM python:3.11-slim
# The wheels are mounted, not copied, so they leave no layer behind.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels "kompress[operator]"
USER 65532:65532
EXPOSE 8000 8080
ENTRYPOINT ["kompress"]
CMD ["operator"]
