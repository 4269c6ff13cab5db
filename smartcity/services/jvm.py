"""JVM artifacts (the Kafka broker, Spark's S3A jars) resolved by Maven from a pom.

Maven keeps the jars in its user-level repository; the resolved classpath is cached per
pom content under `~/.cache/smartcity/jvm`, so a second start does not run Maven again.
An image resolves them once at build time instead: `SMARTCITY_JARS_DIR` names a folder
with one sub-folder of jars per pom (`<name>/*.jar`), and then Maven is never called.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "smartcity" / "jvm"
JARS_DIR_ENV = "SMARTCITY_JARS_DIR"


class JvmSetupError(RuntimeError):
    """Java or Maven is missing, or Maven could not resolve the artifacts."""


def pom_path(name: str) -> Path:
    return Path(str(resources.files("smartcity.services.poms").joinpath(f"{name}.pom.xml")))


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home, "bin", "java") if home else None
    found = str(candidate) if candidate and candidate.exists() else shutil.which("java")
    if not found:
        raise JvmSetupError("java not found: install JDK 17+ or set JAVA_HOME")
    return found


def prebuilt_classpath(name: str) -> str | None:
    """The jars of `name` under `$SMARTCITY_JARS_DIR/<name>/` (as `mvn
    dependency:copy-dependencies` leaves them), or None when the variable is not set."""
    folder = os.environ.get(JARS_DIR_ENV)
    if not folder:
        return None
    jars = sorted(Path(folder, name).glob("*.jar"))
    if not jars:
        raise JvmSetupError(f"{JARS_DIR_ENV}={folder}: no {name}/*.jar there")
    return os.pathsep.join(str(jar) for jar in jars)


def classpath(name: str) -> str:
    """The resolved classpath of `<name>.pom.xml`: the pre-resolved jars when
    `SMARTCITY_JARS_DIR` is set, else Maven's, running Maven only when not cached."""
    prebuilt = prebuilt_classpath(name)
    if prebuilt is not None:
        return prebuilt
    pom = pom_path(name)
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    cached = CACHE_DIR / f"{name}-{digest}.classpath"
    if cached.exists() and all(Path(jar).exists() for jar in cached.read_text().split(os.pathsep)):
        return cached.read_text()
    maven = shutil.which("mvn")
    if not maven:
        raise JvmSetupError("mvn not found: install Maven 3.8+ to fetch the JVM artifacts")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    scratch = cached.with_suffix(".tmp")
    result = subprocess.run(
        [
            maven,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:build-classpath",
            f"-Dmdep.outputFile={scratch}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not scratch.exists():
        raise JvmSetupError(f"Maven could not resolve {pom.name}:\n{result.stdout[-2000:]}")
    scratch.replace(cached)
    return cached.read_text()
