"""PostgreSQL for the deployment's Dagster instance, and that instance's home.

Debian's PostgreSQL runs in a temporary folder on a free loopback port (trust auth, so the
password the instance config requires is any string), and `deployment_home` copies the
deployment's one `docker/dagster/dagster.yaml` into a Dagster home: tests run exactly the
instance config that the image ships.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smartcity.services.processes import free_port

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENT_DAGSTER = REPO / "docker" / "dagster"
"""The deployment's instance (`dagster.yaml`) and code-server workspace (`workspace.yaml`)."""


def _as_postgres(*command: str) -> list[str]:
    """Run as the `postgres` user when root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@contextmanager
def postgres_server() -> Iterator[int]:
    """A fresh PostgreSQL server on 127.0.0.1; yields its port, removes it afterwards."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    assert binaries, "PostgreSQL is not installed: `make postgresql` installs it"
    bin_dir = Path(binaries[-1])
    folder = Path(tempfile.mkdtemp(prefix="smartcity-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        _as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "dagster", "--auth=trust"),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        _as_postgres(
            str(bin_dir / "pg_ctl"),
            *("-D", str(data), "-l", str(folder / "log"), "-w"),
            *("-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"),
        ),
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 30
        ready = [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
        while subprocess.run(ready, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.5)
        yield port
    finally:
        subprocess.run(
            _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"),
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def postgres_env(port: int) -> dict[str, str]:
    """The instance's `DAGSTER_PG_*` for a server from `postgres_server`."""
    return {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(port),
        "DAGSTER_PG_DB": "postgres",
        "DAGSTER_PG_USER": "dagster",
        "DAGSTER_PG_PASSWORD": "unused-with-trust",
    }


def deployment_home(path: Path) -> Path:
    """A DAGSTER_HOME at `path` holding the deployment's `dagster.yaml`."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEPLOYMENT_DAGSTER / "dagster.yaml", path / "dagster.yaml")
    return path


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
