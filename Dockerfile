# The one image of the project: stream worker, API, simulator, Dagster code location,
# webserver and daemon all run from it with a different command (docker/compose.yaml).
#
# A first stage bundles the live map with Node; the next builds a virtual environment with
# the versions pinned in constraints.txt; the last copies only that environment onto a slim
# runtime with a JDK (PySpark 4.3 needs Java 17+), so compilers, npm and pip caches never
# reach the image that runs.

ARG PYTHON_VERSION=3.11.14
ARG DEBIAN_RELEASE=bookworm
ARG NODE_VERSION=20.20.2

# The live city map's bundle (web/, served by the API at /map), built from the lock file.
FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web ./
RUN npm run build

FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, so a code change does not reinstall them: install the pinned set
# from the project metadata alone, then the project itself without dependencies.
COPY pyproject.toml constraints.txt README.md ./
RUN mkdir -p smartcity simulator smartcity_stream smartcity_dagster smartcity_api \
    && for p in smartcity simulator smartcity_stream smartcity_dagster smartcity_api; do \
         touch $p/__init__.py; done \
    && pip install -c constraints.txt . \
    && pip uninstall -y smartcity
COPY smartcity ./smartcity
COPY simulator ./simulator
COPY smartcity_stream ./smartcity_stream
COPY smartcity_dagster ./smartcity_dagster
COPY smartcity_api ./smartcity_api
COPY --from=web /src/smartcity_api/map ./smartcity_api/map
RUN pip install --no-deps -c constraints.txt .

FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS runtime
# JDK 17 for Spark (driver in the Dagster runs); curl for health checks; tini reaps the
# JVM's children and forwards SIGTERM so the stream worker can commit and stop cleanly.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless curl tini \
    && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/home
COPY --from=build /opt/venv /opt/venv
# A fixed uid, so volumes written by one container are readable by the next.
RUN groupadd --system --gid 10001 smartcity \
    && useradd --system --uid 10001 --gid smartcity --home-dir /app --create-home smartcity \
    && mkdir -p /opt/dagster/home/compute_logs \
    && chown -R smartcity:smartcity /opt/dagster
# The deployment's Dagster instance (PostgreSQL storage, run coordinator) and workspace
# (the code location as a gRPC server); a laptop uses the repo's own files instead.
COPY --chown=smartcity:smartcity docker/dagster/dagster.yaml docker/dagster/workspace.yaml \
     /opt/dagster/home/
WORKDIR /app
USER smartcity
ENTRYPOINT ["tini", "--"]
CMD ["smartcity", "--help"]
