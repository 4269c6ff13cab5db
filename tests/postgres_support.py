"""PostgreSQL for the deployment's Dagster instance, and that instance's home.

The server is the one `smartcity services up --cluster` starts (`smartcity.services.postgres`),
here in a temporary runtime folder of its own.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smartcity.services import postgres
from smartcity.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENT_DAGSTER = REPO / "docker" / "dagster"
"""The deployment's code-server workspace (`workspace.yaml`)."""


def reachable_folder(path: Path | None = None, prefix: str = "smartcity-") -> Path:
    """`path` (or a new temporary folder) created where PostgreSQL's own user can reach it:
    when root, the server runs as `postgres`, which must enter every folder above its data,
    and a checkout or pytest's temporary folders may be private to their owner."""
    folder = path or Path(tempfile.mkdtemp(prefix=prefix, dir=tempfile.gettempdir()))
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    return folder


@contextmanager
def postgres_server() -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL server on 127.0.0.1; yields its `DAGSTER_PG_*`, removes it after."""
    folder = reachable_folder(prefix="smartcity-pg-")
    record = postgres.start(Settings(_env_file=None, runtime_dir=folder))
    try:
        yield {key: value for key, value in record.env.items() if key.startswith("DAGSTER_PG_")}
    finally:
        postgres.stop(record, grace_s=20)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def fresh_database(server: dict[str, str]) -> Iterator[dict[str, str]]:
    """A database of its own on a shared server (`DAGSTER_PG_*` of `server`); yields the
    variables that select it, drops it afterwards. An instance on a server that outlives
    test runs would otherwise see earlier runs, and a sensor's cursor from them."""
    import psycopg2

    name = f"dagster_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(
        host=server["DAGSTER_PG_HOST"],
        port=int(server["DAGSTER_PG_PORT"]),
        user=server["DAGSTER_PG_USER"],
        password=server["DAGSTER_PG_PASSWORD"],
        dbname=server["DAGSTER_PG_DB"],
    )
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        try:
            yield {**server, "DAGSTER_PG_DB": name}
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        admin.close()
