"""Schemathesis against the app's own OpenAPI: no server error, every response as declared.

Runs in-process (ASGI) over the lake the real stream worker wrote, one test per operation
with a bounded number of generated cases, so the whole run stays well under a minute.
(schemathesis' lazy `from_fixture` loader does not run under pytest 9, so each test drives
the operation's Hypothesis strategy itself.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from smartcity.settings import Settings
from smartcity_api.app import create_app
from tests.api_support import CLOSED_PORT, ApiLake, unreadable

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


def _run(operation: Any, check: Callable[[schemathesis.Case], None]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def generated(case: schemathesis.Case) -> None:
        check(case)

    generated()


@pytest.mark.parametrize(("method", "path"), _operations())
def test_no_server_error_and_responses_match_the_schema(
    api_schema: schemathesis.schemas.BaseSchema, method: str, path: str
) -> None:
    _run(api_schema[path][method], lambda case: case.call_and_validate(checks=CHECKS))


@pytest.fixture(scope="module", params=["closed port", "unreadable folder"])
def lake_down_schema(
    request: pytest.FixtureRequest, api_lake: ApiLake, tmp_path_factory: pytest.TempPathFactory
) -> schemathesis.schemas.BaseSchema:
    """The app with its lake on an S3 endpoint that does not answer, or in a local folder
    that cannot be read; Kafka is up."""
    if request.param == "closed port":
        broken = api_lake.settings.model_copy(update={"s3_endpoint": CLOSED_PORT})
    else:
        folder: Path = unreadable(tmp_path_factory.mktemp("lake-down"))
        broken = api_lake.settings.model_copy(update={"lake_uri": folder.as_uri()})
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(broken))


@pytest.mark.parametrize(("method", "path"), _operations())
def test_with_the_lake_down_no_server_error_but_503_with_a_detail(
    lake_down_schema: schemathesis.schemas.BaseSchema, method: str, path: str
) -> None:
    """Every operation: no 5xx but 503, and a 503 says why in JSON (`detail`; `/health`
    its components, the lake's with its detail)."""

    def answers_503_at_worst(case: schemathesis.Case) -> None:
        response = case.call()
        assert response.status_code < 500 or response.status_code == 503, (
            case.as_curl_command(),
            response.status_code,
            response.text[:500],
        )
        if response.status_code == 503:
            body = response.json()
            detail = body["components"]["lake"]["detail"] if path == "/health" else body["detail"]
            assert isinstance(detail, str) and detail, body

    _run(lake_down_schema[path][method], answers_503_at_worst)
