"""The sensor registry: platform data that a city imports, versioned in the lake.

`contract` judges rows against `contracts/sensor-registry.schema.json`, `files` reads and
writes the formats a city keeps its sensors in, `store` keeps the versions in the lake.
"""

from smartcity.registry.contract import (
    REGISTRY_SCHEMA,
    RegistryError,
    registry_row_schema,
    table_rows,
    validated_table,
)
from smartcity.registry.files import file_format, read_rows, write_table
from smartcity.registry.store import (
    EMPTY,
    RegistryFollower,
    RegistryUnavailable,
    RegistryVersion,
    import_registry,
    load_registry,
    publish_registry,
    published_registry,
    registry_in_force,
    sensors_by_id,
)

__all__ = [
    "EMPTY",
    "REGISTRY_SCHEMA",
    "RegistryError",
    "RegistryFollower",
    "RegistryUnavailable",
    "RegistryVersion",
    "file_format",
    "import_registry",
    "load_registry",
    "publish_registry",
    "published_registry",
    "read_rows",
    "registry_in_force",
    "registry_row_schema",
    "sensors_by_id",
    "table_rows",
    "validated_table",
    "write_table",
]
