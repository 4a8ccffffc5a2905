# One image for every StreamFlow process in docker-compose.yml (topic init, migrations,
# workers, live view, Dagster webserver and daemon). Kafka and PostgreSQL use their own images.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DO_NOT_TRACK=1 \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false \
    DAGSTER_HOME=/opt/dagster/home

WORKDIR /app
RUN pip install --no-cache-dir uv==0.13.9
COPY requirements.lock pyproject.toml README.md ./
RUN uv pip install --system --no-cache -r requirements.lock
COPY streamflow ./streamflow
COPY streamflow_defs ./streamflow_defs
COPY assets ./assets
COPY sensors ./sensors
COPY resources ./resources
COPY dbt_project ./dbt_project
# The dbt manifest the Dagster definitions load is part of the image, parsed here from the
# project it ships (`streamflow dbt prepare`: `dbt parse`, no database; .dockerignore leaves the
# checkout's target/ out): importing the definitions never parses (docs/ARCHITECTURE.md).
# DAGSTER_HOME holds no config in the image: compose's `migrate` service writes dagster.yaml and
# workspace.yaml into the dagster-home volume mounted here (`streamflow dagster prepare`). The
# directory exists, owned by the user below, so a new volume takes that owner.
RUN uv pip install --system --no-cache --no-deps -e . \
    && streamflow dbt prepare \
    && mkdir -p "$DAGSTER_HOME"

RUN useradd --create-home --uid 10001 streamflow \
    && chown -R streamflow /app /opt/dagster
USER streamflow
CMD ["streamflow", "--help"]
