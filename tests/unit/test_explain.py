"""Unit: the explanation builder."""

from crsmon.domain import ASTCT_2019
from crsmon.domain.explain import Explanation, num


def test_missing_inputs_are_listed_once_in_order() -> None:
    """A missing input named twice is reported once, in first-seen order."""
    ex = Explanation()
    for path in ("temperature_c", "oxygen", "temperature_c"):
        ex.lacks(path)
    assert ex.result(0, ASTCT_2019).missing_inputs == ("temperature_c", "oxygen")


def test_numbers_read_as_written() -> None:
    """Whole numbers keep one decimal; others keep their digits."""
    assert (num(7), num(38.65), num(0.0274)) == ("7.0", "38.65", "0.0274")
