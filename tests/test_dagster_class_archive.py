"""The Spark driver's class archive: written once, then Spark's classes come from it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from smartcity.settings import Settings
from smartcity_dagster.class_archive import build_archive, driver_options
from smartcity_dagster.spark import spark_config

DRIVER = """
import json, sys
from pyspark.sql import SparkSession
builder = SparkSession.builder
for key, value in json.loads(sys.argv[1]).items():
    builder = builder.config(key, value)
spark = builder.getOrCreate()
print(spark.range(1000).selectExpr("sum(id)").first()[0])
spark.stop()
"""


def test_a_local_driver_maps_sparks_classes_from_the_archive(tmp_path: Path) -> None:
    archive = build_archive()
    assert archive.stat().st_size > 0
    assert driver_options() == [f"-XX:SharedArchiveFile={archive}"]
    config = spark_config(Settings(_env_file=None))
    assert f"-XX:SharedArchiveFile={archive}" in config["spark.driver.extraJavaOptions"]
    loads = tmp_path / "class-load.log"
    config["spark.driver.extraJavaOptions"] += f" -Xlog:class+load=info:file={loads}"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DRIVER), json.dumps(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(sum(range(1000)))
    sources = {
        line.split()[1]: line.split("source: ", 1)[1].strip()
        for line in loads.read_text().splitlines()
        if "source: " in line
    }
    assert sources["org.apache.spark.SparkContext"] == "shared objects file (top)"
    assert sources["org.apache.spark.sql.catalyst.analysis.Analyzer"] == (
        "shared objects file (top)"
    )
