"""A real PostgreSQL server on loopback for Dagster's instance (runs, events, schedules).

Debian's server binaries (/usr/lib/postgresql/<version>/bin) run in the runtime folder's own
data directory, on a loopback port kept for restarts, with database and superuser `dagster`.
TCP clients need the password (SCRAM), as in the deployment; the local socket, in the
service's own folder, trusts its users so that setting the database up needs no password.
PostgreSQL refuses to run as root, so when root it runs as the user `postgres`.

Beside the server, a Dagster home whose `dagster.yaml` is the deployment's instance
(`dagster-deployment.yaml`, the file the image copies too): exporting what `services up`
prints points the webserver, the daemon, the code server and `smartcity materialize` at it.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import psutil

from smartcity.services.kept import kept
from smartcity.services.processes import ServiceRecord, free_port, spawn, started_at, wait_until
from smartcity.services.processes import stop as stop_family
from smartcity.settings import Settings

NAME = "postgres"
DATABASE = "dagster"
USER = "dagster"
SYSTEM_USER = "postgres"
START_TIMEOUT_S = 60.0
DEPLOYMENT_INSTANCE = "dagster-deployment.yaml"
MAX_CONCURRENT_RUNS = "4"
"""The instance's run queue limit (`DAGSTER_MAX_CONCURRENT_RUNS`), compose's default."""


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed, or its user cannot reach the runtime folder."""


def bin_dir() -> Path:
    """The newest installed server's binaries."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version)
    if not found:
        raise PostgresUnavailable("PostgreSQL not found: `make postgresql` installs it")
    return Path(found[-1])


def _version(path: str) -> int:
    number = Path(path).parent.name
    return int(number) if number.isdigit() else 0


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SYSTEM_USER, "--", *command] if os.geteuid() == 0 else command


def start(settings: Settings) -> ServiceRecord:
    """Create the cluster (first time), start the server and the `dagster` database."""
    binaries = bin_dir()
    home = settings.runtime_dir / NAME
    data = home / "data"
    log = home / "postgres.log"
    plan = _plan(home)
    _give_to_server_user(home)
    if not (data / "PG_VERSION").exists():
        _initdb(binaries, home, data, plan["password"], log)
    spawned = spawn(
        _as_server_user(
            [
                str(binaries / "postgres"),
                "-D",
                str(data),
                "-p",
                str(plan["port"]),
                "-k",
                str(home),
                "-c",
                "listen_addresses=127.0.0.1",
            ]
        ),
        log,
    )
    ready = [str(binaries / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(plan["port"])]
    wait_until(lambda: _succeeds(ready), spawned, START_TIMEOUT_S, "PostgreSQL", log)
    postmaster = psutil.Process(int((data / "postmaster.pid").read_text().split()[0]))
    _create_database(binaries, home, plan["port"], log)
    return ServiceRecord(
        name=NAME,
        pid=postmaster.pid,
        started_at=started_at(postmaster),
        log=str(log),
        env={
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(plan["port"]),
            "DAGSTER_PG_USER": USER,
            "DAGSTER_PG_PASSWORD": plan["password"],
            "DAGSTER_PG_DB": DATABASE,
            "DAGSTER_MAX_CONCURRENT_RUNS": MAX_CONCURRENT_RUNS,
            "DAGSTER_HOME": str(deployment_home(settings.runtime_dir / "dagster-postgres")),
        },
    )


def deployment_home(path: Path) -> Path:
    """A DAGSTER_HOME at `path` whose `dagster.yaml` is the deployment's instance."""
    path.mkdir(parents=True, exist_ok=True)
    source = resources.files("smartcity.services").joinpath(DEPLOYMENT_INSTANCE)
    (path / "dagster.yaml").write_bytes(source.read_bytes())
    return path


def stop(record: ServiceRecord, grace_s: float) -> bool:
    """Fast shutdown (SIGINT to the postmaster: sessions end, data is checkpointed); what is
    still running after `grace_s` is killed. True if the server was running."""
    process = record.process()
    if process is None:
        return False
    process.send_signal(signal.SIGINT)
    _, alive = psutil.wait_procs([process], timeout=grace_s)
    if alive:
        stop_family(record, 0.0)
    return True


def _plan(home: Path) -> dict[str, Any]:
    return kept(
        home / "plan.json", lambda: {"port": free_port(), "password": secrets.token_urlsafe(24)}
    )


def _give_to_server_user(home: Path) -> None:
    """When root, the folder belongs to `postgres`, who must also be able to walk to it."""
    if os.geteuid() != 0:
        return
    shutil.chown(home, SYSTEM_USER, SYSTEM_USER)
    for folder in home.resolve().parents:
        if not folder.stat().st_mode & 0o001:
            raise PostgresUnavailable(
                f"the user {SYSTEM_USER} cannot enter {folder}, so cannot reach {home}: "
                "use a runtime folder it can reach (SMARTCITY_RUNTIME_DIR)"
            )


def _initdb(binaries: Path, home: Path, data: Path, password: str, log: Path) -> None:
    pwfile = home / "initial-password"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(pwfile, SYSTEM_USER, SYSTEM_USER)
    command = [
        str(binaries / "initdb"),
        "-D",
        str(data),
        "-U",
        USER,
        f"--pwfile={pwfile}",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "-E",
        "UTF8",
        "--no-instructions",
    ]
    try:
        _run_logged(_as_server_user(command), log, "initdb")
    except RuntimeError:
        shutil.rmtree(data, ignore_errors=True)
        raise
    finally:
        pwfile.unlink(missing_ok=True)


def _create_database(binaries: Path, home: Path, port: int, log: Path) -> None:
    """The `dagster` database unless it exists, over the trusted local socket."""
    client = ["-h", str(home), "-p", str(port), "-U", USER]
    query = [str(binaries / "psql"), *client, "-d", "postgres", "-tAc"]
    exists = subprocess.run(
        [*query, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"],
        capture_output=True,
        text=True,
        check=False,
    )
    if exists.stdout.strip() != "1":
        _run_logged([str(binaries / "createdb"), *client, DATABASE], log, "createdb")


def _run_logged(command: list[str], log: Path, what: str) -> None:
    with log.open("ab") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if code.returncode != 0:
        raise RuntimeError(f"PostgreSQL's {what} failed; see {log}")


def _succeeds(command: list[str]) -> bool:
    return subprocess.run(command, capture_output=True, check=False).returncode == 0
