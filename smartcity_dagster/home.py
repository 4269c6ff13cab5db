"""The Dagster instance's home for runs made in this process (the CLI, the demo, the bench).

Kept apart from the CLI and from Dagster itself: it must be set before Dagster reads it,
and importing it costs no Dagster import.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from smartcity.settings import Settings


def dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME, or `<runtime>/dagster` made from the packaged `dagster.yaml`."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    home = settings.runtime_dir / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    source = resources.files("smartcity_dagster").joinpath("dagster.yaml")
    with resources.as_file(source) as path:
        shutil.copyfile(path, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home
