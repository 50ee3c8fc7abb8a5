"""docs/feed-format.md: every example is checked by the intake's own parser."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crsmon.cli.schema import FEED_MODELS
from crsmon.intake.parse import Refused, parse_record

DOC = (Path(__file__).parents[2] / "docs" / "feed-format.md").read_text(
    encoding="utf-8"
)
SERVER_CLOCK = datetime(2025, 3, 20, tzinfo=UTC)
"""The server clock the page says its examples were checked against."""

BLOCK = re.compile(
    r"^```json( rejected)?\n(.*?)\n```\n(?:Refused: `([^`\n]*)`)?", re.M | re.S
)
EXAMPLES = [(m[2], m[1] is not None, m[3]) for m in BLOCK.finditer(DOC)]
ACCEPTED = [text for text, rejected, _ in EXAMPLES if not rejected]
REJECTED = [(text, reason) for text, rejected, reason in EXAMPLES if rejected]


def _section(kind: str) -> str:
    start = DOC.index(f"\n## `{kind}`\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end]


def test_the_examples_were_found() -> None:
    assert len(ACCEPTED) >= len(FEED_MODELS)
    assert len(REJECTED) >= 5
    assert f"`{SERVER_CLOCK.isoformat()}`" in DOC


@pytest.mark.parametrize("text", ACCEPTED)
def test_each_example_is_accepted(text: str) -> None:
    assert "\n" not in text  # one record, one line, as in a feed
    parsed = parse_record(text, SERVER_CLOCK)
    assert not isinstance(parsed, Refused), parsed


@pytest.mark.parametrize(("text", "reason"), REJECTED)
def test_each_rejected_example_is_refused_for_the_reason_given(
    text: str, reason: str | None
) -> None:
    parsed = parse_record(text, SERVER_CLOCK)
    assert isinstance(parsed, Refused)
    assert parsed.error == reason


@pytest.mark.parametrize("kind", list(FEED_MODELS))
def test_every_kind_has_a_section_with_an_accepted_example(kind: str) -> None:
    section = _section(kind)
    examples = [t for t in ACCEPTED if t in section]
    assert any(f'"kind": "{kind}"' in t for t in examples), kind


@pytest.mark.parametrize("kind", list(FEED_MODELS))
def test_every_field_of_a_kind_is_documented(kind: str) -> None:
    """Each field of the model is named in its section or in the common rules."""
    common = DOC[: DOC.index("\n## `patient`\n")]
    section = _section(kind)
    for name in FEED_MODELS[kind].model_fields:
        assert f"`{name}`" in section or f"| `{name}` |" in common, (kind, name)
