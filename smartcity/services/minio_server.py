"""A real MinIO server (the deployment's S3 store) on loopback, built from source once.

MinIO's community edition ships as source only, so the binary is built with
`go install` into Go's user-level bin folder and reused from there.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import httpx
from pydantic import SecretStr

from smartcity.lake import s3_filesystem
from smartcity.services.processes import ServiceRecord, free_port, spawn, started_at, wait_until
from smartcity.settings import Settings

NAME = "s3"
MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
START_TIMEOUT_S = 60.0
DEFAULT_BUCKET = "smartcity"


class MinioUnavailable(RuntimeError):
    """MinIO is not installed and cannot be built here (Go missing or the build failed)."""


def _go_bin_dir() -> Path | None:
    go = shutil.which("go")
    if not go:
        return None
    gopath = subprocess.run([go, "env", "GOPATH"], capture_output=True, text=True, check=False)
    return Path(gopath.stdout.strip().split(os.pathsep)[0]) / "bin"


def minio_binary(build: bool = True) -> str:
    """The `minio` executable, building it with `go install` the first time."""
    found = shutil.which("minio")
    if found:
        return found
    bin_dir = _go_bin_dir()
    if bin_dir and (bin_dir / "minio").exists():
        return str(bin_dir / "minio")
    if not build or not bin_dir:
        raise MinioUnavailable("minio not found: `make minio` builds it (needs Go)")
    result = subprocess.run(
        ["go", "install", f"{MINIO_MODULE}@{MINIO_VERSION}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise MinioUnavailable(f"building MinIO failed:\n{result.stderr[-2000:]}")
    return str(bin_dir / "minio")


def _live(endpoint: str) -> bool:
    try:
        return httpx.get(f"{endpoint}/minio/health/live", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start(settings: Settings) -> ServiceRecord:
    """Start MinIO with fresh random root credentials and create the default bucket."""
    home = settings.runtime_dir / NAME
    log = home / "minio.log"
    port = settings.s3_port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = _credentials(home)
    process = spawn(
        [
            minio_binary(),
            "server",
            str(home / "data"),
            "--quiet",
            "--address",
            f"127.0.0.1:{port}",
            "--console-address",
            f"127.0.0.1:{free_port()}",
        ],
        log,
        env={
            "MINIO_ROOT_USER": credentials[0],
            "MINIO_ROOT_PASSWORD": credentials[1],
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
        },
    )
    wait_until(lambda: _live(endpoint), process, START_TIMEOUT_S, "MinIO", log)
    env = {
        "SMARTCITY_S3_ENDPOINT": endpoint,
        "SMARTCITY_S3_ACCESS_KEY": credentials[0],
        "SMARTCITY_S3_SECRET_KEY": credentials[1],
    }
    client = settings.model_copy(
        update={
            "s3_endpoint": endpoint,
            "s3_access_key": SecretStr(credentials[0]),
            "s3_secret_key": SecretStr(credentials[1]),
        }
    )
    s3_filesystem(client).create_dir(DEFAULT_BUCKET)
    return ServiceRecord(NAME, process.pid, started_at(process), str(log), env)


def _credentials(home: Path) -> tuple[str, str]:
    """Root credentials made once per runtime folder and kept private to its owner."""
    keys = home / "credentials"
    if not keys.exists():
        home.mkdir(parents=True, exist_ok=True)
        keys.write_text(f"smartcity-{secrets.token_hex(4)}\n{secrets.token_urlsafe(24)}\n")
        keys.chmod(0o600)
    user, password = keys.read_text().split()
    return user, password
