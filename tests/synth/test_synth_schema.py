"""``crsmon schema``: valid JSON Schemas of the feed record kinds."""

from __future__ import annotations

import json

from click.testing import CliRunner

from crsmon.cli.schema import FEED_MODELS, schema
from crsmon.intake.schemas import VitalsIn


def test_all_kinds_print_as_one_json_object() -> None:
    result = CliRunner().invoke(schema, [])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert list(document) == list(FEED_MODELS)
    assert len(document) == 13
    for kind, kind_schema in document.items():
        assert kind_schema["type"] == "object"
        assert kind_schema["additionalProperties"] is False
        assert kind_schema["properties"]["kind"]["const"] == kind
        assert {"source_system", "source_record_id", "kind"} <= set(
            kind_schema["required"]
        )


def test_one_kind_prints_its_schema() -> None:
    result = CliRunner().invoke(schema, ["vitals"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == VitalsIn.model_json_schema()


def test_an_unknown_kind_is_a_usage_error() -> None:
    result = CliRunner().invoke(schema, ["heartbeat"])
    assert result.exit_code == 2
    assert "heartbeat" in result.output
