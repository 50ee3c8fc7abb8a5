"""Rule-set types: grading criteria as data, plus the named convention settings.

A :class:`RuleSet` holds every threshold and category table the evaluator
(:mod:`crsmon.domain.grading`) applies, each rule with its citation. Where the
source is silent or ambiguous the project has made a choice (grading.md §1.7);
the choices that are genuinely open (A1, A3, A5–A8, A10, A12) are
:class:`Conventions` settings. A non-default setting is part of the rule-set key,
so every result says exactly which reading produced it, e.g.
``astct-2019+hypotension=haque``. Released rule sets are frozen values: a change
to one is a new version, and a test pins each released fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from crsmon.domain.vocab import OxygenDevice, VasoactiveDrug


class HypotensionReference(StrEnum):
    """A1: which numeric SBP reference defines untreated hypotension."""

    PALS = "pals"
    """PALS / Mahadeo 2019 (70 + 2 × age for 1–10 y), adult SBP < 90."""
    HAQUE = "haque"
    """Haque & Zaritsky 2007 5th percentile (65 + 2 × age for 1–17 y)."""
    TREATMENT_ONLY = "treatment_only"
    """No SBP threshold: only fluids, vasopressors or a clinician's call count."""


class AgeBasis(StrEnum):
    """A1: the age fed to the pediatric SBP formulas."""

    COMPLETED_YEARS = "completed_years"
    DECIMAL = "decimal"


class MaskedFever(StrEnum):
    """A3: does a fever-masking drug waive fever before CRS is established?"""

    STRICT = "strict"
    """No: only patients who *have* CRS and then get the drug (footnote text)."""
    LENIENT = "lenient"
    """Yes: the secondary tables that drop the "have CRS" qualifier."""


class AfebrileAfterOnset(StrEnum):
    """A5: fever settles with no masking drug while oxygen or pressors continue."""

    LITERAL = "literal"
    """Grade 0: no qualifying fever and no waiver; a monitoring flag is raised."""
    CLINICAL = "clinical"
    """Keep grading by hypotension and hypoxia once CRS is established."""


class Inotropes(StrEnum):
    """A7: do dobutamine and milrinone count as vasopressors?"""

    EXCLUDED = "excluded"
    COUNTED = "counted"


class Terlipressin(StrEnum):
    """A8: terlipressin is a vasopressin analogue not named by any source."""

    VASOPRESSIN_LIKE = "vasopressin_like"
    VASOPRESSOR = "vasopressor"


class AngiotensinII(StrEnum):
    """A8: angiotensin II (approved after the 2018 consensus meeting)."""

    VASOPRESSOR = "vasopressor"
    EXCLUDED = "excluded"


class DeviceVsFlow(StrEnum):
    """A10: blow-by above 6 L/min and HFNC below 6 L/min."""

    DEVICE = "device"
    """The named device decides: blow-by is low flow, HFNC is high flow."""
    FLOW = "flow"
    """The rate decides: <= 6 L/min is low flow, > 6 L/min is high flow."""


class TracheostomyCollar(StrEnum):
    """A12: the tracheostomy collar is not named by ASTCT."""

    FACEMASK = "facemask"
    """Graded like an open face mask (grade 3)."""
    FLOW = "flow"
    """Graded by rate like a nasal cannula."""


class AgentRole(StrEnum):
    """How a vasoactive agent counts toward the hemodynamic grade (R5)."""

    VASOPRESSOR = "vasopressor"
    VASOPRESSIN_LIKE = "vasopressin_like"
    NOT_COUNTED = "not_counted"


@dataclass(frozen=True, slots=True)
class DeviceRule:
    """How one oxygen device grades (R6).

    ``grade`` is the device's grade; with ``by_flow`` the flow decides instead
    (<= the low-flow limit is 2, above it 3) and ``grade`` is used, with a
    data-quality flag, only when no flow was recorded.
    """

    grade: int
    category: str
    by_flow: bool = False


@dataclass(frozen=True, slots=True)
class SbpBand:
    """Below an age bound, SBP < ``base_mmhg + per_year_mmhg × age`` is hypotension."""

    below_age_years: float
    base_mmhg: float
    per_year_mmhg: float
    label: str


@dataclass(frozen=True, slots=True)
class RuleText:
    """A numbered rule or convention: what it says, its source, how sure it is."""

    id: str
    title: str
    statement: str
    source: str
    status: str


def frozen_mapping(mapping: Mapping[Any, Any]) -> MappingProxyType[Any, Any]:
    """A read-only copy of ``mapping``, for released rule tables."""
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class Conventions:
    """The open choices of grading.md §1.7; the defaults are the spec's decisions."""

    hypotension: HypotensionReference = HypotensionReference.PALS
    hypotension_age: AgeBasis = AgeBasis.COMPLETED_YEARS
    masked_fever: MaskedFever = MaskedFever.STRICT
    afebrile_after_onset: AfebrileAfterOnset = AfebrileAfterOnset.LITERAL
    waiver_window_h: float | None = None
    inotropes: Inotropes = Inotropes.EXCLUDED
    terlipressin: Terlipressin = Terlipressin.VASOPRESSIN_LIKE
    angiotensin_ii: AngiotensinII = AngiotensinII.VASOPRESSOR
    device_vs_flow: DeviceVsFlow = DeviceVsFlow.DEVICE
    trach_collar: TracheostomyCollar = TracheostomyCollar.FACEMASK


CONVENTION_IDS: MappingProxyType[str, str] = MappingProxyType(
    {
        "hypotension": "A1",
        "hypotension_age": "A1",
        "masked_fever": "A3",
        "afebrile_after_onset": "A5",
        "waiver_window_h": "A6",
        "inotropes": "A7",
        "terlipressin": "A8",
        "angiotensin_ii": "A8",
        "device_vs_flow": "A10",
        "trach_collar": "A12",
    }
)
"""Which §1.7 ambiguity each setting answers."""

_KEY_NAMES: MappingProxyType[str, str] = MappingProxyType(
    {"waiver_window_h": "waiver_window"}
)
"""Setting names as written in a rule-set key, where they differ from the field."""


MAX_WAIVER_WINDOW_H = 8760.0
"""A fever-waiver window longer than a year is an entry error."""


def _format_hours(value: float) -> str:
    # Exact and parseable back: never exponent notation, never rounded.
    text = str(int(value)) if value.is_integer() else repr(value)
    return f"{text}h"


def _parse_hours(text: str) -> float:
    number = text[:-1] if text.endswith("h") else text
    try:
        hours = float(number)
    except ValueError:
        raise ValueError(f"waiver_window: {text!r} is not a number of hours") from None
    if not 0 < hours <= MAX_WAIVER_WINDOW_H:
        raise ValueError(
            f"waiver_window: must be more than 0 and at most {MAX_WAIVER_WINDOW_H:g} h"
        )
    return hours


def _convention_of(key_name: str) -> str:
    field_name = {v: k for k, v in _KEY_NAMES.items()}.get(key_name, key_name)
    return CONVENTION_IDS[field_name]


def format_settings(conventions: Conventions) -> str:
    """The key suffix for non-default settings, e.g. ``+hypotension=haque``."""
    default = Conventions()
    parts = []
    for f in fields(conventions):
        value = getattr(conventions, f.name)
        if value == getattr(default, f.name):
            continue
        name = _KEY_NAMES.get(f.name, f.name)
        text = _format_hours(value) if f.name == "waiver_window_h" else str(value)
        parts.append(f"+{name}={text}")
    return "".join(parts)


def settings_table() -> list[tuple[str, str, tuple[str, ...]]]:
    """Each setting as (key name, convention id, accepted values, default first)."""
    return [
        (name, _convention_of(name), values)
        for name, values in setting_choices().items()
    ]


def setting_choices() -> dict[str, tuple[str, ...]]:
    """Each setting's key name and accepted values (default first)."""
    default = Conventions()
    choices: dict[str, tuple[str, ...]] = {}
    for f in fields(default):
        name = _KEY_NAMES.get(f.name, f.name)
        value = getattr(default, f.name)
        if isinstance(value, StrEnum):
            choices[name] = tuple(str(v) for v in type(value))
        else:
            choices[name] = ("episode", "<hours>h")
    return choices


def parse_settings(suffix_parts: list[str]) -> Conventions:
    """Build :class:`Conventions` from ``name=value`` parts of a rule-set key."""
    by_key_name = {_KEY_NAMES.get(f.name, f.name): f.name for f in fields(Conventions)}
    default = Conventions()
    values: dict[str, Any] = {}
    for part in suffix_parts:
        name, sep, text = part.partition("=")
        if not sep or name not in by_key_name:
            known = ", ".join(sorted(by_key_name))
            raise ValueError(f"unknown setting {part!r}; settings are: {known}")
        attr = by_key_name[name]
        if attr in values:
            raise ValueError(f"setting {name!r} given twice")
        if attr == "waiver_window_h":
            values[attr] = None if text == "episode" else _parse_hours(text)
            continue
        enum_type = type(getattr(default, attr))
        try:
            values[attr] = enum_type(text)
        except ValueError:
            options = ", ".join(str(v) for v in enum_type)
            raise ValueError(f"{name}: {text!r} is not one of {options}") from None
    return replace(default, **values)


@dataclass(frozen=True, slots=True)
class _Resolved:
    """A rule set's tables under its active settings (see ``RuleSet._resolved``)."""

    key: str
    devices: Mapping[OxygenDevice, DeviceRule]
    agents: Mapping[VasoactiveDrug, AgentRole]
    device_alternatives: Mapping[OxygenDevice, tuple[str, DeviceRule] | None]
    agent_conventions: Mapping[VasoactiveDrug, str | None]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """A released grading rule set and the convention settings it is applied with."""

    name: str
    version: str
    title: str
    citation: str
    fever_threshold_c: float
    low_flow_max_l_min: float
    devices: Mapping[OxygenDevice, DeviceRule]
    agents: Mapping[VasoactiveDrug, AgentRole]
    sbp_references: Mapping[HypotensionReference, tuple[SbpBand, ...]]
    hypoxemia_spo2_below_pct: float
    temperature_disagreement_c: float
    resolution_window_h: float
    rules: Mapping[str, RuleText]
    device_overrides: Mapping[tuple[str, str], Mapping[OxygenDevice, DeviceRule]]
    agent_overrides: Mapping[tuple[str, str], Mapping[VasoactiveDrug, AgentRole]]
    conventions: Conventions = field(default_factory=Conventions)
    _resolved: _Resolved = field(init=False, repr=False, compare=False)
    """The tables under the active settings, worked out once (a grading asks
    for them several times per assessment): not part of the released data."""

    def __post_init__(self) -> None:
        active = self._active()
        object.__setattr__(
            self,
            "_resolved",
            _Resolved(
                key=self.name + format_settings(self.conventions),
                devices=MappingProxyType(
                    {d: self._device_rule(d, active) for d in self.devices}
                ),
                agents=MappingProxyType(
                    {d: self._agent_role(d, active) for d in self.agents}
                ),
                device_alternatives=MappingProxyType(
                    {d: self._device_alternative(d, active) for d in self.devices}
                ),
                agent_conventions=MappingProxyType(
                    {d: self._agent_convention(d) for d in self.agents}
                ),
            ),
        )

    @property
    def key(self) -> str:
        """The rule-set key every result carries, with any non-default settings."""
        return self._resolved.key

    def with_conventions(self, conventions: Conventions) -> RuleSet:
        """The same released rules applied under other settings."""
        return replace(self, conventions=conventions)

    def _active(self) -> list[tuple[str, str]]:
        c = self.conventions
        return [
            (_KEY_NAMES.get(f.name, f.name), str(getattr(c, f.name))) for f in fields(c)
        ]

    def device_rule(self, device: OxygenDevice) -> DeviceRule:
        """The device's rule under the active settings."""
        return self._resolved.devices[device]

    def agent_role(self, drug: VasoactiveDrug) -> AgentRole:
        """How the agent counts under the active settings."""
        return self._resolved.agents[drug]

    def device_alternative(self, device: OxygenDevice) -> tuple[str, DeviceRule] | None:
        """The convention that decides how ``device`` grades, and the rule it is
        *not* using now (the override when inactive, the base rule when active)."""
        return self._resolved.device_alternatives[device]

    def agent_convention(self, drug: VasoactiveDrug) -> str | None:
        """The convention (A7, A8) that decides how ``drug`` counts, if any."""
        return self._resolved.agent_conventions[drug]

    def _device_rule(
        self, device: OxygenDevice, active: list[tuple[str, str]]
    ) -> DeviceRule:
        rule = self.devices[device]
        for setting in active:
            rule = self.device_overrides.get(setting, {}).get(device, rule)
        return rule

    def _agent_role(
        self, drug: VasoactiveDrug, active: list[tuple[str, str]]
    ) -> AgentRole:
        role = self.agents[drug]
        for setting in active:
            role = self.agent_overrides.get(setting, {}).get(drug, role)
        return role

    def _device_alternative(
        self, device: OxygenDevice, active: list[tuple[str, str]]
    ) -> tuple[str, DeviceRule] | None:
        for setting, table in self.device_overrides.items():
            if device in table:
                other = self.devices[device] if setting in active else table[device]
                return _convention_of(setting[0]), other
        return None

    def _agent_convention(self, drug: VasoactiveDrug) -> str | None:
        for setting, table in self.agent_overrides.items():
            if drug in table:
                return _convention_of(setting[0])
        return None

    def fingerprint(self) -> str:
        """SHA-256 of the released data (settings excluded): pinned by a test."""
        data = {
            "name": self.name,
            "version": self.version,
            "citation": self.citation,
            "fever_threshold_c": self.fever_threshold_c,
            "low_flow_max_l_min": self.low_flow_max_l_min,
            "devices": {str(k): repr(v) for k, v in self.devices.items()},
            "agents": {str(k): str(v) for k, v in self.agents.items()},
            "sbp_references": {
                str(k): [repr(b) for b in v] for k, v in self.sbp_references.items()
            },
            "hypoxemia_spo2_below_pct": self.hypoxemia_spo2_below_pct,
            "temperature_disagreement_c": self.temperature_disagreement_c,
            "resolution_window_h": self.resolution_window_h,
            "rules": {k: repr(v) for k, v in self.rules.items()},
            "device_overrides": {
                "=".join(k): {str(d): repr(r) for d, r in v.items()}
                for k, v in self.device_overrides.items()
            },
            "agent_overrides": {
                "=".join(k): {str(d): str(r) for d, r in v.items()}
                for k, v in self.agent_overrides.items()
            },
        }
        canonical = json.dumps(data, sort_keys=True, ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()


__all__ = [
    "AfebrileAfterOnset",
    "AgeBasis",
    "AgentRole",
    "AngiotensinII",
    "Conventions",
    "DeviceRule",
    "DeviceVsFlow",
    "HypotensionReference",
    "Inotropes",
    "MaskedFever",
    "RuleSet",
    "RuleText",
    "SbpBand",
    "Terlipressin",
    "TracheostomyCollar",
    "format_settings",
    "frozen_mapping",
    "parse_settings",
    "setting_choices",
    "settings_table",
]
