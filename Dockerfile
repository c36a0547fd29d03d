# syntax=docker/dockerfile:1
# The giantflow image: one image, one entrypoint; the compose services pick the sub-command
# (`migrate`, `api`, `worker`, `bank-sim`).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml constraints.txt ./
COPY services/ services/
COPY workflows/ workflows/
COPY devtools/ devtools/
RUN pip install -c constraints.txt .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    # The source under /app is what runs, so services.config.PROJECT_ROOT is /app and alembic.ini,
    # migrations/ and programs/ are found beside it; the installed copy provides the dependencies and
    # the `giantflow` script.
    PYTHONPATH=/app \
    GIANTFLOW_PROGRAMS_DIR=/app/programs \
    GIANTFLOW_DATA_DIR=/data
RUN groupadd --system --gid 10001 giantflow \
    && useradd --system --uid 10001 --gid giantflow --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin giantflow \
    && install -d -o giantflow -g giantflow /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Owned by root and read-only to the service user; only /data is writable.
COPY alembic.ini ./
COPY services/ services/
COPY workflows/ workflows/
# The partner-bank simulator (`giantflow bank-sim`, the compose file's stand-in bank) lives in devtools;
# `api`, `worker` and `migrate` never import it.
COPY devtools/ devtools/
COPY migrations/ migrations/
COPY programs/ programs/
USER giantflow
EXPOSE 8000 8100
ENTRYPOINT ["giantflow"]
CMD ["--help"]
