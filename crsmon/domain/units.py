"""Exact unit conversions for the fields that carry raw units (grading.md §4.3).

Fever is a hard threshold (R1: >= 38.0 °C, never rounded up), so a conversion must
not move a reading across it. Conversions therefore run on the *decimal* value the
bedside wrote (``100.4`` is read as the decimal 100.4, not the nearest binary
float) in exact rational arithmetic, and only the final result is rounded to the
nearest float. 100.4 °F is then exactly 38.0 °C. Because rounding to the nearest
float is monotonic and 38.0 is itself a float, a reading whose exact value is
below 38 °C can never compare as >= 38.0 after conversion unless it lies within
one float ulp (~7e-15 °C) of it, far below any thermometer's resolution.
"""

from __future__ import annotations

from fractions import Fraction

from crsmon.domain.vocab import TemperatureUnit

_FIVE_NINTHS = Fraction(5, 9)


def exact_decimal(value: float) -> Fraction:
    """Return the decimal value a float was written as, as an exact fraction.

    ``repr`` gives the shortest decimal string that round-trips, which is the
    string a JSON feed sent for any value with up to 15 significant digits.
    """
    return Fraction(repr(value))


def celsius_exact(value: float, unit: TemperatureUnit) -> Fraction:
    """A temperature in a UCUM unit as exact °C: C = (F − 32) × 5/9 (§4.3, R1)."""
    exact = exact_decimal(value)
    if unit is TemperatureUnit.FAHRENHEIT:
        return (exact - 32) * _FIVE_NINTHS
    return exact


def temperature_to_celsius(value: float, unit: TemperatureUnit) -> float:
    """Convert a temperature in a UCUM unit to °C, rounded once to the nearest float."""
    return float(celsius_exact(value, unit))
