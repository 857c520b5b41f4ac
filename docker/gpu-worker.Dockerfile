# Stratos GPU worker: a Prefect process worker for a GPU server, with vLLM in its own venv.
#
#   docker build -f docker/gpu-worker.Dockerfile -t stratos-gpu-worker .
#   docker run --rm --gpus all -e PREFECT_API_URL=http://HOST:4200/api -e POOL=stratos-gpu \
#       -p 8000-8010:8000-8010 stratos-gpu-worker
#
# vLLM cannot share Stratos' environment (it caps fastapi below Prefect 3.8's needs, pins torch
# exactly and downgrades transformers), so the image holds two venvs:
#   /opt/stratos/.venv   Stratos + Prefect + CUDA torch 2.13.0 (training, evaluation)
#   /opt/vllm            vLLM with its own torch; the deploy stage runs $STRATOS_VLLM serve ...
# Not built in this repository's CI (no container engine there); kept to the pins in pyproject.toml.
FROM nvidia/cuda:12.8.1-base-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    VLLM_NO_USAGE_STATS=1 \
    STRATOS_HOME=/var/lib/stratos \
    STRATOS_VLLM=/opt/vllm/bin/vllm \
    POOL=stratos-gpu

# gcc and python3.11-dev: Triton (under vLLM and torch.compile) builds small C launchers at runtime.
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev gcc libnuma1 tini \
    && rm -rf /var/lib/apt/lists/*

# vLLM in its own venv (it brings the CUDA torch it was built against).
RUN python3.11 -m venv /opt/vllm && /opt/vllm/bin/pip install "vllm==0.32.0"

# Stratos: torch first (the PyPI wheel is the CUDA build on x86_64 Linux), then the project.
RUN python3.11 -m venv /opt/stratos/.venv && /opt/stratos/.venv/bin/pip install torch==2.13.0
WORKDIR /opt/stratos
COPY pyproject.toml README.md ./
COPY stratos ./stratos
COPY flows ./flows
COPY tasks ./tasks
COPY blocks ./blocks
RUN .venv/bin/pip install . "openai>=3.50" && .venv/bin/pip check
ENV PATH=/opt/stratos/.venv/bin:$PATH

VOLUME /var/lib/stratos
ENTRYPOINT ["tini", "--", "sh", "-c", "exec prefect worker start --pool \"$POOL\" --type process"]
