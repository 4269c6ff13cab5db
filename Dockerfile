# The images of the platform (docker/compose.yaml):
# - the project's image (the last stage, the default target): stream worker, API,
#   simulator, Dagster code location, webserver and daemon, each with its own command;
# - `spark-executor`: the Spark master and workers. Executors run the Python functions of
#   the batch layer, so they get the driver's Python and its pandas, pyarrow and numpy (as
#   pinned in constraints.txt), but not the project: what a run needs of it, the driver
#   ships to them.
#
# Stages: Node bundles the live map; Maven resolves the S3A jars (hadoop-aws and the AWS
# SDK bundle), so no container calls Maven at run time (SMARTCITY_JARS_DIR); pip builds a
# virtual environment with the versions of constraints.txt. The images that run get only
# those results on a slim Debian with a Java 17 runtime, so compilers, npm, Maven and pip
# caches never reach them.

ARG PYTHON_VERSION=3.11.14
ARG DEBIAN_RELEASE=bookworm
ARG NODE_VERSION=20.20.2
ARG MAVEN_IMAGE=maven:3.9.11-eclipse-temurin-17
ARG SPARK_VERSION=4.3.0

# The live city map's bundle (web/, served by the API at /map), built from the lock file.
FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web ./
RUN npm run build

# Spark's S3A connector as the project's pom declares it, copied into one folder per pom:
# smartcity.services.jvm.classpath reads `$SMARTCITY_JARS_DIR/spark-s3a/*.jar`.
FROM ${MAVEN_IMAGE} AS jars
COPY smartcity/services/poms/spark-s3a.pom.xml /src/poms/
RUN mvn -B -q -f /src/poms/spark-s3a.pom.xml dependency:copy-dependencies \
        -DoutputDirectory=/opt/smartcity/jars/spark-s3a \
    && ls /opt/smartcity/jars/spark-s3a/hadoop-aws-*.jar /opt/smartcity/jars/spark-s3a/bundle-*.jar

# Spark's own distribution (the same version as the pyspark the project pins).
FROM apache/spark:${SPARK_VERSION} AS spark-dist

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

# What every image that runs shares: Python, a Java 17 runtime for Spark (driver or
# cluster), curl for health checks, and tini, which reaps the JVM's children and forwards
# SIGTERM so a process can finish its work and stop cleanly. JAVA_HOME is a link made
# here to wherever Debian put the JVM, so the file holds on every CPU architecture.
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS jre
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless curl tini \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /usr/lib/jvm/java-17
ENV JAVA_HOME=/usr/lib/jvm/java-17 \
    PYTHONUNBUFFERED=1

# The Spark master and workers. Their executors start /usr/local/bin/python3
# (SMARTCITY_SPARK_EXECUTOR_PYTHON of the Dagster services), the same Python as the
# driver's, with the libraries its functions import; pyspark itself comes with Spark.
FROM jre AS spark-executor
COPY constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir --disable-pip-version-check -c /tmp/constraints.txt \
        pandas pyarrow numpy \
    && rm /tmp/constraints.txt
COPY --from=spark-dist /opt/spark /opt/spark
RUN groupadd --system --gid 185 spark \
    && useradd --system --uid 185 --gid spark --home-dir /opt/spark/work-dir spark \
    && mkdir -p /opt/spark/work-dir \
    && chown spark:spark /opt/spark/work-dir
# Workers keep their executors' files in the spark user's own folder (Spark's default,
# $SPARK_HOME/work, belongs to root here).
ENV SPARK_HOME=/opt/spark \
    SPARK_WORKER_DIR=/opt/spark/work-dir \
    PYSPARK_PYTHON=/usr/local/bin/python3
WORKDIR /opt/spark/work-dir
USER spark
ENTRYPOINT ["tini", "--"]

FROM jre AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/home \
    SMARTCITY_JARS_DIR=/opt/smartcity/jars
COPY --from=build /opt/venv /opt/venv
COPY --from=jars /opt/smartcity/jars /opt/smartcity/jars
# A fixed uid, so volumes written by one container are readable by the next. Runs' logs
# go to $DAGSTER_HOME/storage (a volume in compose).
RUN groupadd --system --gid 10001 smartcity \
    && useradd --system --uid 10001 --gid smartcity --home-dir /app --create-home smartcity \
    && mkdir -p /opt/dagster/home/storage \
    && chown -R smartcity:smartcity /opt/dagster
# The deployment's Dagster instance (PostgreSQL storage, run coordinator; the file that
# `services up --cluster` puts in its DAGSTER_HOME on one machine) and workspace (the code
# location as a gRPC server).
COPY --chown=smartcity:smartcity smartcity/services/dagster-deployment.yaml \
     /opt/dagster/home/dagster.yaml
COPY --chown=smartcity:smartcity docker/dagster/workspace.yaml /opt/dagster/home/
WORKDIR /app
USER smartcity
ENTRYPOINT ["tini", "--"]
CMD ["smartcity", "--help"]
