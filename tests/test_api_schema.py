"""Schemathesis against the app's own OpenAPI: no server error, every response as declared.

Runs in-process (ASGI) over the lake the real stream worker wrote, one test per operation
with a bounded number of generated cases, so the whole run stays well under a minute.
(schemathesis' lazy `from_fixture` loader does not run under pytest 9, so each test drives
the operation's Hypothesis strategy itself.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from smartcity.settings import Settings
from smartcity_api.app import create_app
from tests.api_support import ApiLake

pytestmark = pytest.mark.integration
EXAMPLES = 30
CHECKS = [not_a_server_error, response_schema_conformance]
LIVE_STREAM = "/api/v1/live/stream"


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every documented operation; building the app touches nothing. The
    live stream never ends, so a generated call would never return: it has its own tests
    (tests/test_api_live_stream.py)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(Settings(_env_file=None)))
    operations = [(op.ok().method, op.ok().path) for op in schema.get_all_operations()]
    return [operation for operation in operations if operation[1] != LIVE_STREAM]


@pytest.fixture(scope="module")
def api_schema(api_lake: ApiLake) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(api_lake.settings))


@pytest.mark.parametrize(("method", "path"), _operations())
def test_no_server_error_and_responses_match_the_schema(
    api_schema: schemathesis.schemas.BaseSchema, method: str, path: str
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def responds_as_documented(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS)

    responds_as_documented()
