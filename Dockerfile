# syntax=docker/dockerfile:1
# One file, two images: ORT=cpu (default) or ORT=gpu (onnxruntime-gpu on a CUDA runtime base).
ARG ORT=cpu
ARG PY_BASE=python:3.11-slim-bookworm
ARG CUDA_BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

FROM ${PY_BASE} AS build
ARG ORT
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY models ./models
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir ".[${ORT}]"

FROM ${PY_BASE} AS runtime-cpu
FROM ${CUDA_BASE} AS runtime-gpu
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 && rm -rf /var/lib/apt/lists/* \
 && ln -sf /usr/bin/python3.11 /usr/local/bin/python

FROM runtime-${ORT}
RUN useradd --system --uid 10001 --home /app rmad
COPY --from=build /opt/venv /opt/venv
COPY --chown=rmad models/artifacts /app/models/artifacts
ENV PATH=/opt/venv/bin:$PATH RMAD_HOST=0.0.0.0 RMAD_PORT=8000 PYTHONUNBUFFERED=1
WORKDIR /app
USER rmad
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["rmad"]
CMD ["run"]
