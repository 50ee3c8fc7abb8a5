"""``crsmon schema``: the JSON Schema of each feed record kind (docs/feed-format.md)."""

from __future__ import annotations

import json
from typing import Any, get_args

import click
from pydantic import BaseModel

from crsmon.intake.schemas import ClinicalIn, PatientIn


def _kind(model: type[BaseModel]) -> str:
    return str(get_args(model.model_fields["kind"].annotation)[0])


FEED_MODELS: dict[str, type[BaseModel]] = {
    _kind(model): model for model in get_args(PatientIn | ClinicalIn)
}
"""Every feed record kind and the strict model that validates it."""


def kind_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of one record kind (what the intake validates against)."""
    return FEED_MODELS[kind].model_json_schema()


@click.command()
@click.argument("kind", required=False, type=click.Choice(list(FEED_MODELS)))
def schema(kind: str | None) -> None:
    """Print the JSON Schema of each feed record kind, or of KIND only.

    Without KIND the output is one JSON object: each kind and its schema. The
    schemas give fields and types; the plausibility limits, the tz-aware time
    rule and the worked examples are in docs/feed-format.md.
    """
    if kind is None:
        document: dict[str, Any] = {k: kind_schema(k) for k in FEED_MODELS}
    else:
        document = kind_schema(kind)
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))
