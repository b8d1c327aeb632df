"""The OpenAPI document: kept in the repo (runtimes/openapi.json), served by the server, covering every route, and
true: schemathesis generates requests from it against the real server and finds no 5xx and no response that
violates the document (status codes, content types, headers, bodies)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mlpk.runtimes import api
from tests.runtime.conftest import Served

DOCUMENT = Path(__file__).resolve().parents[2] / "runtimes" / "openapi.json"
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance,
          response_headers_conformance]


def test_document_is_served_and_covers_every_route(mixed_server: Served) -> None:
    served = httpx.get(mixed_server.url + "/openapi.json")
    assert served.status_code == 200
    assert served.content == DOCUMENT.read_bytes()
    paths = json.loads(DOCUMENT.read_text())["paths"]
    for route in api.ROUTES:
        assert route.method.lower() in paths.get(route.template, {}), f"{route.method} {route.template} undocumented"
    assert "/metrics" in paths


def pinned_to(document: dict, model: str) -> dict:
    """The document with the `model` path parameter pinned to the served model, so generated requests get past
    the model lookup and exercise the request decoding behind it."""
    pinned = copy.deepcopy(document)
    for operations in pinned["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "model":
                    parameter["schema"] = {"type": "string", "enum": [model]}
                if parameter["name"] == "version":
                    parameter["schema"] = {"type": "string", "enum": ["1"]}
    return pinned


@pytest.fixture(scope="module")
def any_model_schema(mixed_server: Served) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_url(mixed_server.url + "/openapi.json")


@pytest.fixture(scope="module")
def served_model_schema(mixed_server: Served) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_dict(pinned_to(httpx.get(mixed_server.url + "/openapi.json").json(), "mixed"))


ANY = schemathesis.pytest.from_fixture("any_model_schema")
SERVED = schemathesis.pytest.from_fixture("served_model_schema")
FUZZ = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))


@ANY.parametrize()
@FUZZ
def test_fuzz_any_model_name(case: schemathesis.Case, mixed_server: Served) -> None:
    case.call_and_validate(base_url=mixed_server.url, checks=CHECKS, timeout=10)


@SERVED.parametrize()
@FUZZ
def test_fuzz_the_served_model(case: schemathesis.Case, mixed_server: Served) -> None:
    case.call_and_validate(base_url=mixed_server.url, checks=CHECKS, timeout=10)
