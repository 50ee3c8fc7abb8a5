"""Property tests for the pure ASTCT grading core (grading.md §1, §5).

The strategies build valid, frozen :class:`Assessment` and :class:`Episode` values
across the whole input space the edge accepts; the properties check the rules
R1–R10 and the §1.7 conventions that must hold for every input, not just for the
hand-picked vectors.
"""

from __future__ import annotations

import random
from dataclasses import replace
from fractions import Fraction
from typing import TypeVar

from hypothesis import example, given, settings
from hypothesis import strategies as st

from crsmon.domain.astct2019 import ASTCT_2019
from crsmon.domain.catalog import resolve_rule_set
from crsmon.domain.episodes import grade_episode
from crsmon.domain.grading import grade_assessment
from crsmon.domain.results import GradeResult
from crsmon.domain.rules import (
    DeviceVsFlow,
    RuleSet,
    TracheostomyCollar,
    setting_choices,
)
from crsmon.domain.snapshot import (
    Assessment,
    Episode,
    IcansFindings,
    MaskingDrug,
    OxygenSupport,
    TemperatureReading,
    Treatment,
    VasopressorInfusion,
)
from crsmon.domain.units import temperature_to_celsius
from crsmon.domain.vocab import (
    CerebralEdema,
    Consciousness,
    MotorFinding,
    OxygenDevice,
    Seizure,
    TemperatureUnit,
    TreatmentDrug,
    VasoactiveDrug,
    VasopressorDoseUnit,
)

T = TypeVar("T")

DEFAULT = resolve_rule_set("astct-2019")

FEW = settings(max_examples=100, deadline=None)
MANY = settings(max_examples=300, deadline=None)

# ---------------------------------------------------------------- strategies

MASKING_DRUGS = st.frozensets(st.sampled_from(list(MaskingDrug)), max_size=2)


def _floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def _maybe(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.none() | strategy


AGES = st.sampled_from(
    [0.001, 27 / 365.25, 28 / 365.25, 0.5, 0.999, 1.0, 9.99, 10.0, 10.5, 18.0, 100.0]
) | _floats(0.001, 100.0)

TEMPERATURES_C = st.sampled_from(
    [30.0, 37.9, 37.95, 37.99, 37.999999, 38.0, 38.000001, 38.01, 43.0]
) | _floats(30.0, 43.0)

TEMPERATURE_RAW = st.one_of(
    st.builds(
        TemperatureReading, value=TEMPERATURES_C, unit=st.just(TemperatureUnit.CELSIUS)
    ),
    st.builds(
        TemperatureReading,
        value=st.sampled_from([100.3, 100.39, 100.4, 100.41]) | _floats(86.0, 109.4),
        unit=st.just(TemperatureUnit.FAHRENHEIT),
    ),
)

FLOWS = st.sampled_from([0.0, 0.5, 6.0, 6.000001, 6.1, 15.0, 80.0]) | _floats(0.0, 80.0)

OXYGEN = st.builds(
    OxygenSupport,
    device=st.sampled_from(OxygenDevice),
    flow_l_min=_maybe(FLOWS),
    fio2=_maybe(_floats(0.21, 1.0)),
)

INFUSIONS = st.builds(
    VasopressorInfusion,
    drug=st.sampled_from(VasoactiveDrug),
    dose=_floats(0.001, 1000.0),
    unit=st.sampled_from(VasopressorDoseUnit),
    duration_h=_maybe(_floats(0.0, 500.0)),
)

CTCAE_TERMS = (
    "acute_kidney_injury",
    "alanine_aminotransferase_increased",
    "blood_bilirubin_increased",
    "creatinine_increased",
    "heart_failure",
    "pulmonary_edema",
)
ORGAN_TOXICITY = st.lists(
    st.tuples(st.sampled_from(CTCAE_TERMS), st.integers(0, 5)),
    max_size=3,
    unique_by=lambda item: item[0],
).map(lambda items: tuple(sorted(items)))

ICANS = st.builds(
    IcansFindings,
    ice_score=_maybe(st.integers(0, 10)),
    capd_score=_maybe(st.integers(0, 32)),
    developmental_delay=st.booleans(),
    consciousness=_maybe(st.sampled_from(Consciousness)),
    seizure=_maybe(st.sampled_from(Seizure)),
    motor=_maybe(st.sampled_from(MotorFinding)),
    cerebral_edema=_maybe(st.sampled_from(CerebralEdema)),
    global_aphasia=_maybe(st.booleans()),
    attributable_to_other_cause=st.booleans(),
)

TIMES = st.one_of(
    st.integers(0, 20).map(lambda k: 12.0 * k),
    st.integers(-24, 240).map(float),
    _floats(-24.0, 400.0),
)


@st.composite
def assessments(
    draw: st.DrawFn, age_years: float | None = None, t_hours: float | None = None
) -> Assessment:
    """A valid assessment; in an episode the engine-owned fields stay at defaults."""
    in_episode = t_hours is not None
    sbp = draw(_maybe(_floats(30.0, 250.0)))
    dbp = None
    if sbp is not None:
        dbp = draw(_maybe(st.floats(10.0, sbp, exclude_max=True, allow_nan=False)))
    death = draw(st.booleans())
    return Assessment(
        age_years=draw(AGES) if age_years is None else age_years,
        t_hours=t_hours if in_episode else draw(_maybe(TIMES)),
        weight_kg=draw(_maybe(_floats(0.5, 300.0))),
        temperature_c=draw(_maybe(TEMPERATURES_C)),
        temperature_raw=draw(st.none() | st.none() | TEMPERATURE_RAW),
        fever_attributable_to_other_cause=draw(st.booleans()),
        crs_established=False if in_episode else draw(st.booleans()),
        masking_drugs=frozenset() if in_episode else draw(MASKING_DRUGS),
        sbp_mmhg=sbp,
        dbp_mmhg=dbp,
        map_mmhg=draw(_maybe(_floats(20.0, 200.0))),
        iv_fluid_bolus_for_hypotension=draw(st.booleans()),
        hypotension_assessed=draw(_maybe(st.booleans())),
        vasopressors=tuple(draw(st.lists(INFUSIONS, max_size=3))),
        hypotension_attributable_to_other_cause=draw(st.booleans()),
        oxygen=draw(_maybe(OXYGEN)),
        oxygen_for_comfort_only=draw(st.booleans()),
        hypoxia_attributable_to_other_cause=draw(st.booleans()),
        spo2_pct=draw(_maybe(_floats(0.0, 100.0))),
        organ_toxicity_ctcae=draw(ORGAN_TOXICITY),
        icans=draw(_maybe(ICANS)),
        death=death,
        death_attributable_to_crs=draw(_maybe(st.booleans())) if death else None,
    )


@st.composite
def rule_set_keys(draw: st.DrawFn) -> str:
    """A rule-set key with any combination of the §1.7 convention settings."""
    key = ASTCT_2019.name
    for name, choices in setting_choices().items():
        default, *others = choices
        if "<hours>h" in others:
            others = ["0.5h", "6h", "24h", "72h"]
        value = draw(st.sampled_from([default, *others]))
        if value != default:
            key += f"+{name}={value}"
    return key


RULE_SETS = rule_set_keys().map(resolve_rule_set)
"""ASTCT 2019 under any combination of the convention settings."""

MONOTONE_RULE_SETS = st.sampled_from(
    [
        resolve_rule_set(key)
        for key in (
            "astct-2019",
            "astct-2019+inotropes=counted",
            "astct-2019+device_vs_flow=flow",
            "astct-2019+trach_collar=flow",
            "astct-2019+terlipressin=vasopressor",
            "astct-2019+angiotensin_ii=excluded",
            "astct-2019+hypotension=haque",
            "astct-2019+masked_fever=lenient+afebrile_after_onset=clinical",
            "astct-2019+inotropes=counted+device_vs_flow=flow+trach_collar=flow",
        )
    ]
)


_GAPS = st.sampled_from([24.0, 1.0, 30.0, 12.0])  # around the 24 h window (§5.4)


@st.composite
def _random_timeline(draw: st.DrawFn, distinct: bool) -> list[tuple[float, str]]:
    """Any 2–8 times in any input order, ties allowed unless ``distinct``."""
    times = draw(st.lists(TIMES, min_size=2, max_size=8, unique=distinct))
    return [(t, "any") for t in times]


@st.composite
def _recurring_timeline(draw: st.DrawFn) -> list[tuple[float, str]]:
    """Fevers each followed by two checks: courses start, resolve and recur (§5.5)."""
    t = draw(st.integers(-24, 48).map(float))
    timeline: list[tuple[float, str]] = []
    for _ in range(draw(st.sampled_from([2, 1, 3]))):
        timeline.append((t, draw(st.sampled_from(["fever", "any"]))))
        for _ in range(2):
            t += draw(_GAPS)
            timeline.append((t, draw(st.sampled_from(["quiet", "quiet", "any"]))))
        t += draw(_GAPS)
    return timeline[:8]


def _observation(age: float, t: float, kind: str) -> st.SearchStrategy[Assessment]:
    def plain(temperatures: st.SearchStrategy[float]) -> st.SearchStrategy[Assessment]:
        return st.builds(
            Assessment,
            age_years=st.just(age),
            t_hours=st.just(t),
            temperature_c=temperatures,
        )

    quiet = plain(_floats(35.0, 37.9))  # afebrile, no support: grade 0
    fever = plain(_floats(38.0, 40.5))  # fever alone: grade 1
    full = assessments(age_years=age, t_hours=t)
    return {"quiet": quiet, "fever": fever}.get(kind, full | quiet | fever)


@st.composite
def episodes(draw: st.DrawFn, distinct_times: bool = False) -> Episode:
    """An episode of 2–8 timed observations and 0–3 fever-masking treatments."""
    age = draw(AGES)
    recurring = _recurring_timeline()
    timeline = draw(_random_timeline(distinct_times) | recurring | recurring)
    observations = tuple(draw(_observation(age, t, kind)) for t, kind in timeline)
    treatments = draw(
        st.lists(
            st.builds(Treatment, t_hours=TIMES, drug=st.sampled_from(TreatmentDrug)),
            max_size=3,
        )
    )
    return Episode(
        age_years=age, observations=observations, treatments=tuple(treatments)
    )


# ---------------------------------------------------------------- helpers

_PPV = frozenset(
    {
        OxygenDevice.CPAP,
        OxygenDevice.BIPAP,
        OxygenDevice.INVASIVE_MECHANICAL_VENTILATION,
    }
)
_DEVICE_LEVEL = {
    OxygenDevice.ROOM_AIR: 0,
    OxygenDevice.NASAL_CANNULA: 1,  # without a flow: A11 grades it as low flow
    OxygenDevice.BLOW_BY: 1,
    OxygenDevice.HIGH_FLOW_NASAL_CANNULA: 2,
    OxygenDevice.SIMPLE_FACE_MASK: 2,
    OxygenDevice.PARTIAL_REBREATHER_MASK: 2,
    OxygenDevice.NON_REBREATHER_MASK: 2,
    OxygenDevice.VENTURI_MASK: 2,
    OxygenDevice.TRACHEOSTOMY_COLLAR: 2,
    OxygenDevice.CPAP: 3,
    OxygenDevice.BIPAP: 3,
    OxygenDevice.INVASIVE_MECHANICAL_VENTILATION: 3,
}
"""R6 intensity: room air < low flow < high flow or facemask < positive pressure."""


def support_level(oxygen: OxygenSupport | None, rules: RuleSet) -> int:
    """Intensity of oxygen support from the spec (R6, A10, A11, A12), not the code.

    A nasal cannula is graded by its rate; so are blow-by and HFNC under
    ``device_vs_flow=flow`` and the tracheostomy collar under ``trach_collar=flow``.
    """
    if oxygen is None:
        return 0  # §0.1: room air assumed
    device, flow = oxygen.device, oxygen.flow_l_min
    c = rules.conventions
    by_rate = (
        device is OxygenDevice.NASAL_CANNULA
        or (
            c.device_vs_flow is DeviceVsFlow.FLOW
            and device in (OxygenDevice.BLOW_BY, OxygenDevice.HIGH_FLOW_NASAL_CANNULA)
        )
        or (
            c.trach_collar is TracheostomyCollar.FLOW
            and device is OxygenDevice.TRACHEOSTOMY_COLLAR
        )
    )
    if by_rate and flow is not None:
        return 1 if flow <= 6.0 else 2
    return _DEVICE_LEVEL[device]


def effective_temperature_c(a: Assessment) -> float | None:
    """The temperature graded: ``temperature_c``, else the converted raw reading."""
    if a.temperature_c is not None:
        return a.temperature_c
    if a.temperature_raw is not None:
        return temperature_to_celsius(a.temperature_raw.value, a.temperature_raw.unit)
    return None


def _outside_r8_r10(result: GradeResult) -> tuple[object, ...]:
    return tuple(r for r in result.reasons if r.rule not in ("R8", "R10"))


# ---------------------------------------------------------------- 1. determinism


@MANY
@given(a=assessments(), rules=RULE_SETS)
def test_grading_is_deterministic_and_names_its_rule_set(
    a: Assessment, rules: RuleSet
) -> None:
    """Grading the same assessment twice gives equal results carrying rules.key."""
    first = grade_assessment(a, rules)
    second = grade_assessment(a, rules)
    assert first == second
    assert first.rule_set == rules.key


# ---------------------------------------------------------------- 2. range, reasons


@MANY
@given(a=assessments(), rules=RULE_SETS)
def test_grade_is_in_range_explained_and_five_only_for_crs_death(
    a: Assessment, rules: RuleSet
) -> None:
    """The grade is 0–5 with arrow-form reasons, and 5 exactly for a CRS death."""
    result = grade_assessment(a, rules)
    assert result.grade in range(6)
    assert result.reasons
    for reason in result.reasons:
        assert " -> " in reason.text
    assert (result.grade == 5) == (a.death and a.death_attributable_to_crs is True)


# ---------------------------------------------------------------- 3. more support


@MANY
@given(
    a=assessments(),
    rules=MONOTONE_RULE_SETS,
    pair=st.tuples(_maybe(OXYGEN), _maybe(OXYGEN)),
)
def test_more_intense_oxygen_device_never_lowers_the_grade(
    a: Assessment, rules: RuleSet, pair: tuple[OxygenSupport | None, ...]
) -> None:
    """Replacing the oxygen support by one as intense or more never lowers the grade."""
    lower, higher = sorted(pair, key=lambda o: support_level(o, rules))
    before = grade_assessment(replace(a, oxygen=lower), rules).grade
    after = grade_assessment(replace(a, oxygen=higher), rules).grade
    assert after >= before


@MANY
@given(
    a=assessments(),
    rules=MONOTONE_RULE_SETS,
    device=st.sampled_from(OxygenDevice),
    flows=st.tuples(FLOWS, FLOWS).map(sorted),
)
def test_raising_the_oxygen_flow_never_lowers_the_grade(
    a: Assessment, rules: RuleSet, device: OxygenDevice, flows: list[float]
) -> None:
    """Raising the flow on the same device never lowers the grade."""
    low, high = flows
    before = grade_assessment(replace(a, oxygen=OxygenSupport(device, low)), rules)
    after = grade_assessment(replace(a, oxygen=OxygenSupport(device, high)), rules)
    assert after.grade >= before.grade


@MANY
@given(a=assessments(), rules=MONOTONE_RULE_SETS, extra=INFUSIONS)
def test_adding_a_vasopressor_never_lowers_the_grade(
    a: Assessment, rules: RuleSet, extra: VasopressorInfusion
) -> None:
    """Adding another vasoactive infusion never lowers the grade."""
    before = grade_assessment(a, rules).grade
    after = grade_assessment(replace(a, vasopressors=(*a.vasopressors, extra)), rules)
    assert after.grade >= before


# ---------------------------------------------------------------- 4. vasopressin


@MANY
@given(
    a=assessments(),
    vaso_like=st.lists(
        st.builds(
            VasopressorInfusion,
            drug=st.sampled_from(
                [VasoactiveDrug.VASOPRESSIN, VasoactiveDrug.TERLIPRESSIN]
            ),
            dose=_floats(0.001, 100.0),
            unit=st.sampled_from(VasopressorDoseUnit),
        ),
        min_size=1,
        max_size=4,
    ),
    inotropes=st.lists(
        st.builds(
            VasopressorInfusion,
            drug=st.sampled_from([VasoactiveDrug.DOBUTAMINE, VasoactiveDrug.MILRINONE]),
            dose=_floats(0.001, 100.0),
            unit=st.sampled_from(VasopressorDoseUnit),
        ),
        max_size=2,
    ),
    oxygen=_maybe(OXYGEN.filter(lambda o: o.device not in _PPV)),
    order=st.randoms(use_true_random=False),
)
def test_vasopressin_alone_never_reaches_grade_4(
    a: Assessment,
    vaso_like: list[VasopressorInfusion],
    inotropes: list[VasopressorInfusion],
    oxygen: OxygenSupport | None,
    order: random.Random,
) -> None:
    """Vasopressin-like agents without another counted vasopressor or PPV stay <= 3."""
    infusions = [*vaso_like, *inotropes]
    order.shuffle(infusions)
    a = replace(a, vasopressors=tuple(infusions), oxygen=oxygen)
    if a.death_attributable_to_crs:
        a = replace(a, death_attributable_to_crs=False)  # R9 grade 5 is not at issue
    assert grade_assessment(a, DEFAULT).grade <= 3


# ---------------------------------------------------------------- 5. fever gate


@MANY
@given(a=assessments())
def test_grades_1_to_4_need_fever_or_the_waiver(a: Assessment) -> None:
    """Under the strict literal defaults, grades 1–4 need fever or the R3 waiver."""
    grade = grade_assessment(a, DEFAULT).grade
    if 1 <= grade <= 4:
        t_c = effective_temperature_c(a)
        fever = (
            t_c is not None and t_c >= 38.0 and not a.fever_attributable_to_other_cause
        )
        waived = a.crs_established and MaskingDrug.SINCE_ONSET in a.masking_drugs
        assert fever or waived


# ---------------------------------------------------------------- 6. Fahrenheit

_HUNDREDTHS = st.integers(7700, 11300).map(lambda n: f"{n // 100}.{n % 100:02d}")
_TENTHS = st.integers(770, 1130).map(lambda n: f"{n // 10}.{n % 10}")
FAHRENHEIT_TEXT = (
    st.sampled_from(["100.4", "100.40", "100.39", "100.41", "100.3", "100.5"])
    | _HUNDREDTHS
    | _TENTHS
)


@MANY
@given(a=assessments(), text=FAHRENHEIT_TEXT, rules=RULE_SETS)
def test_fahrenheit_input_grades_like_converted_celsius(
    a: Assessment, text: str, rules: RuleSet
) -> None:
    """A °F reading grades exactly like its °C conversion, with fever iff F >= 100.4."""
    f = float(text)
    fahrenheit = TemperatureReading(f, TemperatureUnit.FAHRENHEIT)
    c = temperature_to_celsius(f, TemperatureUnit.FAHRENHEIT)
    raw = grade_assessment(
        replace(a, temperature_c=None, temperature_raw=fahrenheit), rules
    )
    cel = grade_assessment(replace(a, temperature_c=c, temperature_raw=None), rules)
    assert raw.grade == cel.grade
    assert raw.missing_inputs == cel.missing_inputs
    assert raw.flag_codes == cel.flag_codes
    assert [(r.rule, r.outcome, r.grade) for r in raw.reasons] == [
        (r.rule, r.outcome, r.grade) for r in cel.reasons
    ]
    only_fever = Assessment(age_years=a.age_years, temperature_raw=fahrenheit)
    fever = Fraction(text) >= Fraction("100.4")
    assert grade_assessment(only_fever, rules).grade == (1 if fever else 0)


# ---------------------------------------------------------------- 7. attribution

_ATTRIBUTIONS = ("fever", "hypotension", "hypoxia")


@MANY
@given(
    a=assessments(),
    rules=RULE_SETS,
    attributed=st.sets(st.sampled_from(_ATTRIBUTIONS), min_size=1),
)
def test_attribution_never_raises_the_grade(
    a: Assessment, rules: RuleSet, attributed: set[str]
) -> None:
    """Attributing fever, hypotension or hypoxia elsewhere never raises the grade."""
    before = grade_assessment(a, rules).grade
    attributed_a = replace(
        a,
        fever_attributable_to_other_cause=(
            a.fever_attributable_to_other_cause or "fever" in attributed
        ),
        hypotension_attributable_to_other_cause=(
            a.hypotension_attributable_to_other_cause or "hypotension" in attributed
        ),
        hypoxia_attributable_to_other_cause=(
            a.hypoxia_attributable_to_other_cause or "hypoxia" in attributed
        ),
    )
    after = grade_assessment(attributed_a, rules)
    assert after.grade <= before


# ---------------------------------------------------------------- 8. R8, R10


@MANY
@given(a=assessments(), rules=RULE_SETS, toxicity=ORGAN_TOXICITY, icans=_maybe(ICANS))
def test_organ_toxicity_and_icans_never_change_the_grade(
    a: Assessment,
    rules: RuleSet,
    toxicity: tuple[tuple[str, int], ...],
    icans: IcansFindings | None,
) -> None:
    """Organ toxicity (R8) and ICANS (R10) never change the CRS grade."""
    bare = grade_assessment(replace(a, organ_toxicity_ctcae=(), icans=None), rules)
    full = grade_assessment(
        replace(a, organ_toxicity_ctcae=toxicity, icans=icans), rules
    )
    assert full.grade == bare.grade
    assert _outside_r8_r10(full) == _outside_r8_r10(bare)


# ---------------------------------------------------------------- 9. episodes


def _plain_course(*readings: tuple[float, float]) -> Episode:
    return Episode(
        age_years=30.0,
        observations=tuple(
            Assessment(age_years=30.0, t_hours=t, temperature_c=c) for t, c in readings
        ),
    )


RECURRED_AND_RESOLVED = _plain_course(
    (0.0, 38.0), (1.0, 37.0), (25.0, 37.0), (26.0, 38.0), (27.0, 37.0), (51.0, 37.0)
)
"""Fever at 0 h resolves at 1 h; fever recurs at 26 h and resolves at 27 h (§5.5)."""


@FEW
@given(episode=episodes(), rules=RULE_SETS)
@example(episode=RECURRED_AND_RESOLVED, rules=DEFAULT)
def test_episode_summary_is_consistent_with_its_observations(
    episode: Episode, rules: RuleSet
) -> None:
    """Observations come back in time order and the §5 summary follows from them."""
    result = grade_episode(episode, rules)
    observed = result.observations
    times = [o.t_hours for o in observed]
    assert times == sorted(times)
    assert sorted(o.input_index for o in observed) == list(range(len(times)))
    for o in observed:
        assert episode.observations[o.input_index].t_hours == o.t_hours

    grades = result.per_observation_grades
    assert grades == tuple(o.result.grade for o in observed)
    assert result.grade == max(grades)
    onset = next((o.t_hours for o in observed if o.result.grade >= 1), None)
    assert result.onset_t_hours == onset
    first_max = next(
        (
            o.t_hours
            for o in observed
            if result.grade and o.result.grade == result.grade
        ),
        None,
    )
    assert result.max_grade_t_hours == first_max
    if result.resolution_t_hours is None:
        assert result.duration_hours is None
    else:
        assert onset is not None
        assert result.resolution_t_hours >= onset
        assert result.duration_hours == result.resolution_t_hours - onset


@FEW
@given(
    episode=episodes(distinct_times=True),
    rules=RULE_SETS,
    order=st.randoms(use_true_random=False),
)
def test_episode_does_not_depend_on_input_order(
    episode: Episode, rules: RuleSet, order: random.Random
) -> None:
    """Shuffling observations with distinct times leaves the graded course unchanged."""
    shuffled = list(episode.observations)
    order.shuffle(shuffled)
    first = grade_episode(episode, rules)
    second = grade_episode(replace(episode, observations=tuple(shuffled)), rules)
    assert second.per_observation_grades == first.per_observation_grades
    assert second.onset_t_hours == first.onset_t_hours
    assert second.max_grade_t_hours == first.max_grade_t_hours
    assert second.resolution_t_hours == first.resolution_t_hours
    assert second.duration_hours == first.duration_hours
