"""Unit: strict JSON line reading and error paths."""

import pytest

from crsmon.schemas.errors import field_path
from crsmon.schemas.jsonl import MAX_LINE_BYTES, read_object


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "$: not valid JSON"),
        ("[1, 2]", "$: must be a JSON object, not a JSON array"),
        ("38.5", "$: must be a JSON object, not a JSON number"),
        ("[" * 100_000 + "]" * 100_000, "$: nested too deeply"),
        ('{"x": "' + "a" * MAX_LINE_BYTES + '"}', "$: line longer than"),
    ],
)
def test_unreadable_lines_are_refused(text: str, message: str) -> None:
    """A line that is not one JSON object is refused with a reason and no object."""
    obj, problem = read_object(text)
    assert obj is None
    assert problem is not None
    assert problem.startswith(message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"temperature_c": NaN}', "temperature_c: must be a finite number"),
        ('{"a": {"b": [1, -Infinity]}}', "a.b[1]: must be a finite number"),
        ('{"temperature_c": 1e999}', "temperature_c: must be a finite number"),
        ('{"a": 1, "a": 2}', "a: duplicate key"),
        ('{"oxygen": {"device": "cpap", "device": "bipap"}}', "oxygen.device: dup"),
    ],
)
def test_changed_values_are_refused_with_their_path(text: str, message: str) -> None:
    """NaN, infinity and duplicate keys are refused, naming where they are."""
    obj, problem = read_object(text)
    assert obj is not None
    assert problem is not None
    assert problem.startswith(message)


def test_a_plain_object_is_read() -> None:
    """A valid object comes back with no problem."""
    assert read_object('{"age_years": 4, "id": "x"}') == (
        {"age_years": 4, "id": "x"},
        None,
    )


def test_field_paths_read_like_the_json() -> None:
    """Pydantic locations render as dotted paths with list indices."""
    assert field_path(("vasopressors", 0, "drug")) == "vasopressors[0].drug"
    assert field_path(("episode", "observations", 2, "t_hours")) == (
        "episode.observations[2].t_hours"
    )
