# The one Continuo image: every service and the `continuo` CLI. Build from the repository root:
#   docker build -t continuo:dev .
# Run a service with `python -m services.<ingest|trainer|governance|serving>`, migrate the event
# store with `continuo migrate`; with no command the image prints the CLI's help.
# compose/ runs the whole stack on Apache Kafka, PostgreSQL and Redis (see compose/README.md).

# ---- build: install the package and its dependencies into a virtual environment ----
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first, from pyproject.toml alone, so that a source change reuses this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY shared ./shared
COPY services ./services
COPY continuo ./continuo
RUN pip install --no-deps . && python -c "import shared.settings, services, continuo.cli"

# ---- runtime ----
FROM python:3.11-slim

# LightGBM's wheel links the system OpenMP runtime (libgomp.so.1), which the slim image lacks.
# (Not version-pinned: Debian point releases replace it, and the base image tag moves with them.)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 continuo \
    && useradd --system --uid 10001 --gid continuo --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin continuo

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
# Task specs that ingest registers at start-up (they are not part of the Python package).
COPY tasks ./tasks
# Writable places for the non-root user. /artifacts is where a shared volume is mounted; a fresh
# named volume takes this directory's ownership, so the services can write to it.
RUN mkdir -p /artifacts /var/lib/continuo/trainer \
    && chown -R continuo:continuo /artifacts /var/lib/continuo

# The defaults in shared/settings.py point into the source tree (var/, tasks/), which is not where
# the installed package lives: name every path explicitly. Services bind 127.0.0.1 by default,
# unreachable from outside a container: bind every interface instead.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONTINUO_ENV=production \
    CONTINUO_LOG_FORMAT=json \
    CONTINUO_ARTIFACTS_DIR=/artifacts \
    CONTINUO_TASKS_DIR=/app/tasks \
    TRAINER_DATADIR=/var/lib/continuo/trainer \
    INGEST_HOST=0.0.0.0 \
    TRAINER_HOST=0.0.0.0 \
    GOVERNANCE_HOST=0.0.0.0 \
    SERVING_HOST=0.0.0.0

USER 10001:10001

# ingest, serving, governance, trainer
EXPOSE 8001 8002 8003 8004

CMD ["continuo", "--help"]
