"""The released rule sets, and how a rule-set key names one with its settings."""

from __future__ import annotations

from types import MappingProxyType

from crsmon.domain.astct2019 import ASTCT_2019
from crsmon.domain.rules import RuleSet, parse_settings

RELEASED: MappingProxyType[str, RuleSet] = MappingProxyType(
    {ASTCT_2019.name: ASTCT_2019}
)
"""Every released rule set by name. Released sets are never edited."""

DEFAULT_RULE_SET = ASTCT_2019


def resolve_rule_set(key: str) -> RuleSet:
    """The rule set a key names, e.g. ``astct-2019+hypotension=haque``.

    Raises:
        ValueError: the name is not a released rule set, or a setting is unknown
            or has a value it does not accept.
    """
    name, *settings = key.strip().split("+")
    if name not in RELEASED:
        known = ", ".join(sorted(RELEASED))
        raise ValueError(f"unknown rule set {name!r}; released rule sets: {known}")
    return RELEASED[name].with_conventions(parse_settings(settings))
