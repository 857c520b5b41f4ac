# Stratos CPU worker: a Prefect process worker that runs flow runs (and the CPU serving path).
#
#   docker build -f docker/cpu-worker.Dockerfile -t stratos-cpu-worker .
#   docker run --rm -e PREFECT_API_URL=http://HOST:4200/api -e POOL=stratos-cpu stratos-cpu-worker
#
# Not built in this repository's CI (no container engine there); kept to the pins in pyproject.toml.
FROM python:3.11-slim

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    STRATOS_HOME=/var/lib/stratos \
    POOL=stratos-cpu

# tini as PID 1: endpoints outlive the flow run that started them and are re-parented to PID 1,
# which must reap them when `stratos stop` ends them.
RUN apt-get update && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# torch first, from the CPU wheel index: as a dependency of the project pip would pull the
# CUDA build and several GB of nvidia packages.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /opt/stratos
COPY pyproject.toml README.md ./
COPY stratos ./stratos
COPY flows ./flows
COPY tasks ./tasks
COPY blocks ./blocks
# openai: the deploy stage's smoke test uses the official client.
RUN pip install . "openai>=3.50" && pip check

VOLUME /var/lib/stratos
ENTRYPOINT ["tini", "--", "sh", "-c", "exec prefect worker start --pool \"$POOL\" --type process"]
