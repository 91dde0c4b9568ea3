"""The OpenAPI document declares what the API takes and answers (no database needed)."""

from __future__ import annotations

from typing import Any

import pytest

from leadflow.bootstrap import build_services
from leadflow.entrypoints.api import build_app
from leadflow.settings import Settings


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    services = build_services(Settings(database_url="sqlite:///never-opened.db"))
    try:
        return build_app(services).openapi()
    finally:
        services.close()


TRACKING = {
    "identify": "IdentifyMessage",
    "track": "TrackMessage",
    "page": "PageMessage",
    "screen": "ScreenMessage",
    "group": "GroupMessage",
    "alias": "AliasMessage",
    "batch": "BatchRequest",
    "import": "BatchRequest",
}


@pytest.mark.parametrize(("call", "schema"), TRACKING.items())
def test_tracking_calls_declare_their_body_and_segment_errors(
    document: dict[str, Any], call: str, schema: str
) -> None:
    operation = document["paths"][f"/v1/{call}"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": f"#/components/schemas/{schema}"}
    assert schema in document["components"]["schemas"]
    for status in ("400", "401"):
        error = operation["responses"][status]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/TrackingError"}
    assert operation["security"] == [{"writeKey": []}]


def test_batch_items_are_any_of_the_six_messages(document: dict[str, Any]) -> None:
    items = document["components"]["schemas"]["BatchRequest"]["properties"]["batch"]["items"]
    refs = {variant["allOf"][0]["$ref"].rsplit("/", 1)[1] for variant in items["anyOf"]}
    assert refs == {schema for schema in TRACKING.values() if schema != "BatchRequest"}


def test_every_error_status_has_one_of_the_two_error_bodies(document: dict[str, Any]) -> None:
    bodies = {"#/components/schemas/ErrorBody", "#/components/schemas/TrackingError"}
    seen = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                json_body = response.get("content", {}).get("application/json")
                if status.startswith(("4", "5")) and json_body is not None:
                    assert json_body["schema"].get("$ref") in bodies, (method, path, status)
                    seen += 1
    assert seen > 100
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_management_api_declares_the_admin_token_and_its_401(document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        if path.startswith("/api/"):
            for operation in operations.values():
                assert operation["security"] == [{"adminToken": []}], path
                assert "401" in operation["responses"], path


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    schemas = document["components"]["schemas"]
    assert refs
    assert [r for r in refs if r.removeprefix("#/components/schemas/") not in schemas] == []
