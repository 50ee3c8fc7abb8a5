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


def test_a_number_with_too_many_digits_is_refused_not_raised() -> None:
    """``int()`` refuses more than 4300 digits: that is a refusal, not a crash."""
    obj, problem = read_object('{"temperature_c": 1' + "0" * 5000 + "}")
    assert obj is None
    assert problem == "$: not valid JSON (a number with too many digits)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"\\u0000": 1, "\\u0000": 2}', "$: duplicate key"),
        ('{"a": {"x y": NaN}}', "a: must be a finite number"),
        ('{"' + "k" * 65 + '": [Infinity]}', "$: must be a finite number"),
    ],
)
def test_a_key_that_is_no_field_name_is_not_echoed(text: str, message: str) -> None:
    """The path stops before a key no schema can have (it may hold anything)."""
    _, problem = read_object(text)
    assert problem is not None
    assert problem.startswith(message)
    assert "\x00" not in problem
    assert "x y" not in problem
    assert "k" * 65 not in problem


def test_field_paths_stop_before_a_key_that_is_no_field_name() -> None:
    """Hyphenated names (HTTP headers) stay; anything else ends the path."""
    assert field_path(("x-api-key",)) == "x-api-key"
    assert field_path(("product", "na me", "x")) == "product"
    assert field_path(("organ_toxicity_ctcae", "BAD KEY", "[key]")) == (
        "organ_toxicity_ctcae"
    )
