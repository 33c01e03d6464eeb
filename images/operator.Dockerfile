# syntax=docker/dockerfile:1
# The operator image: kopf, the Kubernetes client and pydantic; no torch.
#   docker build -f images/operator.Dockerfile -t ghcr.io/modelops/modelops-operator:0.1.0 .
# The pins below are requirements/lock.txt's (pyproject dependencies + the `operator`
# extra); tests/unit/test_images.py fails when they drift apart.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies first (a layer that changes only with the lock).
RUN pip install \
      kopf==1.45.2 \
      kubernetes==37.0.2 \
      prometheus-client==0.26.0 \
      croniter==7.0.0 \
      aiohttp==3.14.5 \
      pydantic==2.14.3 \
      pyyaml==6.0.3
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY jobs/ jobs/
# The project itself; its dependencies are exactly the pins above.
RUN pip install --no-deps ".[operator]" \
 && python -c "import modelops_operator, kopf, kubernetes" \
 && ! python -c "import torch" 2>/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modelops-operator" \
      org.opencontainers.image.description="Kubernetes operator for the lifecycle of ML models" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 1000 modelops \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin modelops
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 1000:1000
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "modelops_operator"]
