# syntax=docker/dockerfile:1
#
# MENet-stream image, two variants from this one file (docs/deployment.md, "Container image"):
#
#   docker build --target cpu  -t menet-stream:0.1.0-cpu  .   # python:3.11-slim + the CPU torch wheel
#   docker build --target cuda -t menet-stream:0.1.0-cuda .   # CUDA base + the default (CUDA) torch wheel
#
# The entrypoint is `menet`: `docker run IMAGE engine --config ...`, `... detector ...`,
# `... grabber ...`, `... run ...`, `... demo`. The process runs as uid/gid 10001 (`menet`).
# Nothing in this repository builds it (no Docker daemon on the dev/CI machines);
# tests/test_deploy_manifests.py checks it as text.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Only the CUDA user-space basics (cudart, compat libs, NVIDIA_* variables): the torch wheel from
# PyPI brings its own CUDA libraries (cuDNN, cuBLAS, ...). The host needs the NVIDIA driver and the
# NVIDIA Container Toolkit (Docker: --gpus; Kubernetes: the NVIDIA device plugin).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu22.04
ARG TORCH_VERSION=2.13.0

# ---------------------------------------------------------------- the source tree, both variants
FROM scratch AS source
COPY pyproject.toml README.md /opt/menet/
COPY engine /opt/menet/engine
COPY stream /opt/menet/stream
COPY build_engine /opt/menet/build_engine
COPY synth /opt/menet/synth
COPY configs /opt/menet/configs
COPY checkpoints/menet-tiny-synth.pt /opt/menet/checkpoints/menet-tiny-synth.pt

# ---------------------------------------------------------------- Python 3.11 + torch, per variant
FROM ${PYTHON_IMAGE} AS cpu-base
ARG TORCH_VERSION
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv \
 && pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu

FROM ${CUDA_IMAGE} AS cuda-base
ARG TORCH_VERSION
ENV DEBIAN_FRONTEND=noninteractive \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Ubuntu 22.04 ships python3.11 (universe); the default torch wheel on PyPI is the CUDA build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv \
 && pip install "torch==${TORCH_VERSION}"

# ---------------------------------------------------------------- the images
# The two stages below are the same instructions after FROM (the test checks it): keep them so.
# Editable install (-e) on purpose: engine/config.py finds the shipped configs (`extends: stream`,
# `stream-gpu`) in configs/ next to the packages, and `menet demo` the bundled checkpoint in
# checkpoints/; a plain `pip install .` puts neither into site-packages.
# The dependencies are installed before the source is copied (a layer that changes with pyproject.toml
# only); torch is already there and satisfies the pin. Extras: --build-arg EXTRAS=tensorrt (cuda;
# pycuda then needs a -devel CUDA_IMAGE to compile).
FROM cpu-base AS cpu
ARG EXTRAS=""
COPY --from=source /opt/menet/pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print(*tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt /tmp/pyproject.toml
COPY --from=source /opt/menet /opt/menet
RUN pip install -e "/opt/menet${EXTRAS:+[$EXTRAS]}" \
 && python -m compileall -q /opt/menet/engine /opt/menet/stream /opt/menet/build_engine /opt/menet/synth \
 && python -c "from stream.settings import load_config; load_config('stream'); load_config('stream-gpu')" \
 && menet --help > /dev/null \
 && groupadd --system --gid 10001 menet \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/menet --shell /usr/sbin/nologin menet
USER 10001:10001
WORKDIR /home/menet
# 5555 snippets (engine), 5556 windows (engine), 5560 events (detector), 9100+ /metrics and /health
EXPOSE 5555 5556 5560 9100 9101
ENTRYPOINT ["menet"]
CMD ["--help"]

FROM cuda-base AS cuda
ARG EXTRAS=""
COPY --from=source /opt/menet/pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print(*tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt /tmp/pyproject.toml
COPY --from=source /opt/menet /opt/menet
RUN pip install -e "/opt/menet${EXTRAS:+[$EXTRAS]}" \
 && python -m compileall -q /opt/menet/engine /opt/menet/stream /opt/menet/build_engine /opt/menet/synth \
 && python -c "from stream.settings import load_config; load_config('stream'); load_config('stream-gpu')" \
 && menet --help > /dev/null \
 && groupadd --system --gid 10001 menet \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/menet --shell /usr/sbin/nologin menet
USER 10001:10001
WORKDIR /home/menet
# 5555 snippets (engine), 5556 windows (engine), 5560 events (detector), 9100+ /metrics and /health
EXPOSE 5555 5556 5560 9100 9101
ENTRYPOINT ["menet"]
CMD ["--help"]
