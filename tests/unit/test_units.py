"""Unit: exact temperature conversion (grading.md §4.3, R1)."""

from fractions import Fraction

import pytest

from crsmon.domain.units import celsius_exact, exact_decimal, temperature_to_celsius
from crsmon.domain.vocab import TemperatureUnit

F, C = TemperatureUnit.FAHRENHEIT, TemperatureUnit.CELSIUS


@pytest.mark.parametrize(
    ("fahrenheit", "celsius"),
    [(100.4, 38.0), (212.0, 100.0), (32.0, 0.0), (98.6, 37.0), (104.0, 40.0)],
)
def test_fahrenheit_converts_exactly(fahrenheit: float, celsius: float) -> None:
    """Round °F values convert to the exact °C value, with no float residue."""
    assert temperature_to_celsius(fahrenheit, F) == celsius


def test_100_3_f_is_below_fever() -> None:
    """100.3 °F is 37.94 °C, below 38.0."""
    assert round(temperature_to_celsius(100.3, F), 2) == 37.94


def test_celsius_is_unchanged() -> None:
    """A reading in Cel is returned as written."""
    assert temperature_to_celsius(37.99, C) == 37.99


def test_exact_decimal_reads_what_was_written() -> None:
    """A float is read as the decimal it was written as, not its binary value."""
    assert exact_decimal(0.1) == Fraction(1, 10)
    assert celsius_exact(100.4, F) == 38
