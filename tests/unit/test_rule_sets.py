"""Unit: rule sets are frozen, versioned data with stable keys."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from crsmon.domain import ASTCT_2019, Conventions, resolve_rule_set
from crsmon.domain.rules import HypotensionReference, Inotropes, setting_choices
from crsmon.domain.vocab import OxygenDevice, VasoactiveDrug

RELEASED_FINGERPRINTS = {
    ("astct-2019", "1.0.0"): (
        "e99473125387d9c8d75d07afbb8b27ef9c2644f95f2d418f08a1823d458f0bae"
    ),
}
"""Pinned: editing released rule data fails here. Release a new version instead."""


def test_released_rule_set_data_is_unchanged() -> None:
    """The released astct-2019 1.0.0 data hashes to its pinned fingerprint."""
    pinned = RELEASED_FINGERPRINTS[(ASTCT_2019.name, ASTCT_2019.version)]
    assert ASTCT_2019.fingerprint() == pinned


def test_settings_do_not_change_the_fingerprint() -> None:
    """The fingerprint covers the released data, not the settings applied to it."""
    haque = resolve_rule_set("astct-2019+hypotension=haque")
    assert haque.fingerprint() == ASTCT_2019.fingerprint()


def test_rule_set_cannot_be_mutated() -> None:
    """Released rule sets and their tables are read-only."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        ASTCT_2019.fever_threshold_c = 37.5  # type: ignore[misc]
    with pytest.raises(TypeError):
        ASTCT_2019.devices[OxygenDevice.BLOW_BY] = None  # type: ignore[index]
    with pytest.raises(TypeError):
        ASTCT_2019.agents[VasoactiveDrug.DOBUTAMINE] = None  # type: ignore[index]


def test_default_key_is_exactly_astct_2019() -> None:
    """With the defaults in force the key is exactly ``astct-2019``."""
    assert ASTCT_2019.key == "astct-2019"
    assert resolve_rule_set("astct-2019").key == "astct-2019"
    assert ASTCT_2019.citation.startswith("Lee DW")
    assert "doi:10.1016/j.bbmt.2018.12.758" in ASTCT_2019.citation


def test_non_default_settings_are_appended_in_a_canonical_order() -> None:
    """Settings appear in the key in field order, whatever order they were given."""
    rules = resolve_rule_set("astct-2019+inotropes=counted+hypotension=haque")
    assert rules.key == "astct-2019+hypotension=haque+inotropes=counted"
    assert rules.conventions.hypotension is HypotensionReference.HAQUE
    assert rules.conventions.inotropes is Inotropes.COUNTED


def test_naming_a_default_setting_leaves_the_key_plain() -> None:
    """A setting given at its default value does not change the key."""
    assert resolve_rule_set("astct-2019+hypotension=pals").key == "astct-2019"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (n, v)
        for n, values in setting_choices().items()
        for v in values[1:]
        if "<" not in v
    ],
)
def test_every_setting_value_round_trips(name: str, value: str) -> None:
    """Each non-default value yields a key that resolves back to itself."""
    key = f"astct-2019+{name}={value}"
    assert resolve_rule_set(key).key == key


def test_waiver_window_round_trips() -> None:
    """The waiver window is written in hours and parsed back."""
    rules = resolve_rule_set("astct-2019+waiver_window=12h")
    assert rules.conventions.waiver_window_h == 12
    assert rules.key == "astct-2019+waiver_window=12h"
    assert resolve_rule_set("astct-2019+waiver_window=episode").key == "astct-2019"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("astct-2018", "unknown rule set"),
        ("astct-2019+colour=blue", "unknown setting"),
        ("astct-2019+hypotension", "unknown setting"),
        ("astct-2019+hypotension=kiggs", "not one of"),
        ("astct-2019+inotropes=counted+inotropes=excluded", "given twice"),
        ("astct-2019+waiver_window=soon", "not a number"),
        ("astct-2019+waiver_window=-4h", "more than 0"),
        ("astct-2019+waiver_window=infh", "at most"),
        ("astct-2019+waiver_window=nanh", "at most"),
        ("astct-2019+waiver_window=9000h", "at most"),
    ],
)
def test_bad_keys_are_refused_with_a_reason(key: str, message: str) -> None:
    """An unknown rule set or setting is an error naming what is wrong."""
    with pytest.raises(ValueError, match=message):
        resolve_rule_set(key)


def test_every_convention_setting_has_a_default() -> None:
    """Conventions() is the spec's decisions (grading.md §1.7)."""
    c = Conventions()
    assert c.hypotension is HypotensionReference.PALS
    assert c.waiver_window_h is None
    assert c.inotropes is Inotropes.EXCLUDED


def test_every_rule_and_convention_is_documented_with_a_source() -> None:
    """R1–R10, A1–A16 and §5.1–§5.4 are all in the rule table with a source."""
    ids = {f"R{i}" for i in range(1, 11)} | {f"A{i}" for i in range(1, 17)}
    ids |= {f"§5.{i}" for i in range(1, 5)}
    assert ids <= set(ASTCT_2019.rules)
    for rule in ASTCT_2019.rules.values():
        assert rule.statement
        assert rule.source
        assert rule.status


def test_every_rule_cited_by_the_core_exists() -> None:
    """Every rule id the core cites in a reason is in the rule table."""
    domain = Path(__file__).parents[2] / "crsmon" / "domain"
    source = "\n".join(p.read_text(encoding="utf-8") for p in domain.glob("*.py"))
    cited = set(re.findall(r'"((?:R|A)\d+|§5\.\d)(?:, |")', source))
    cited |= set(re.findall(r', ((?:R|A)\d+|§5\.\d)"', source))
    assert cited
    assert cited <= set(ASTCT_2019.rules), cited - set(ASTCT_2019.rules)


@pytest.mark.parametrize("hours", [0.1234567, 6.0, 36.5, 1234.0, 8760.0])
def test_waiver_window_key_reads_back_exactly(hours: float) -> None:
    """A key written with any window resolves to the same window (no rounding)."""
    rules = ASTCT_2019.with_conventions(Conventions(waiver_window_h=hours))
    assert resolve_rule_set(rules.key).conventions == rules.conventions
