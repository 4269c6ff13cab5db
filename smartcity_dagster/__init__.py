"""The batch layer: Dagster software-defined assets over the lake, built with PySpark."""
