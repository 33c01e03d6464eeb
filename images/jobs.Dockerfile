# syntax=docker/dockerfile:1
# The jobs image: CUDA, torch, transformers, peft, bitsandbytes and modelops_jobs. The
# operator runs it as `python -m modelops_jobs --spec /etc/modelops/spec.json`.
#   docker build -f images/jobs.Dockerfile -t ghcr.io/modelops/modelops-jobs:0.1.0 .
# The pins below are requirements/lock.txt's (pyproject dependencies + the `jobs`
# extra); tests/unit/test_images.py fails when they drift apart. torch comes from the
# PyTorch index of the CUDA release of the base image.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

FROM ${CUDA_IMAGE} AS build
ARG TORCH_INDEX_URL
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --extra-index-url "${TORCH_INDEX_URL}" torch==2.15.0
RUN pip install \
      transformers==5.23.0 \
      peft==0.21.2 \
      bitsandbytes==0.50.2 \
      accelerate==1.15.0 \
      safetensors==0.8.0 \
      scipy==1.17.1 \
      prometheus-client==0.26.0 \
      tqdm==4.70.1 \
      obstore==0.12.1 \
      pydantic==2.14.3 \
      pyyaml==6.0.3
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY jobs/ jobs/
RUN pip install --no-deps ".[jobs]" \
 && python -c "import modelops_jobs, torch, transformers, peft, obstore"

FROM ${CUDA_IMAGE}
LABEL org.opencontainers.image.title="modelops-jobs" \
      org.opencontainers.image.description="modelops Job runner: pruning, unlearning, Trans-LoRA, continual training" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/*
# Ubuntu images ship a user `ubuntu` with uid 1000: the Job pods run as 1000, named modelops.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
 && groupadd --gid 1000 modelops \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin modelops
COPY --from=build /opt/venv /opt/venv
# The Job mounts an emptyDir on /tmp (the root filesystem is read-only) and sets HF_HOME.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1
WORKDIR /tmp
USER 1000:1000
EXPOSE 9400
ENTRYPOINT ["python", "-m", "modelops_jobs.launch"]
