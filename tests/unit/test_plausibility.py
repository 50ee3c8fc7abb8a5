"""Unit: the §4.4 plausibility table's bounds and texts."""

import pytest

from crsmon.domain.plausibility import LIMITS, Limit


@pytest.mark.parametrize(
    ("name", "value", "rejected"),
    [
        ("sbp_mmhg", 0.0, True),  # "<= 0": the bound itself is refused
        ("sbp_mmhg", 0.1, False),
        ("dbp_mmhg", 0.0, False),  # "< 0": the bound itself is accepted
        ("dbp_mmhg", -0.1, True),
        ("temperature_c", 45.0, False),
        ("temperature_c", 45.01, True),
        ("weight_kg", 0.3, True),
        ("fio2", 0.21, False),
        ("fio2", 1.01, True),
    ],
)
def test_reject_bounds(name: str, value: float, rejected: bool) -> None:
    """Reject bounds follow the table's inclusive or exclusive wording."""
    assert LIMITS[name].rejects(value) is rejected


def test_reject_reason_names_each_bound() -> None:
    """The reason text names the bounds that exist and the unit."""
    assert LIMITS["sbp_mmhg"].reject_reason() == "must be > 0 and <= 300 mm[Hg]"
    assert LIMITS["crp_mg_l"].reject_reason() == "must be >= 0 mg/L"
    assert Limit("x", reject_above=5).reject_reason() == "must be <= 5 x"


def test_flag_bounds() -> None:
    """Flag bounds are strict on both sides."""
    temperature = LIMITS["temperature_c"]
    assert not temperature.flags(41.5)
    assert temperature.flags(41.51)
    assert temperature.flags(33.9)
    assert not LIMITS["crp_mg_l"].flags(500)
