"""One patient's course as one row: the grade table behind the EFS analysis.

A pure function of the patient's timeline and the graded episode (the same
:func:`crsmon.domain.episodes.grade_episode` result the service stores), so the
grade table can never disagree with the grades the service raised alerts on.
Every derivation is written down in ``docs/exports.md`` and in
:data:`crsmon.services.exports.COLUMNS`; the conventions that matter for the
survival analysis (risk.md §5.1, §5.5):

- time zero is the infusion; CRS times are in hours, outcome times in days;
- EFS events are no response (timed at day 28, whatever time the record
  carries, as in the generator and ELIANA), relapse and death from any cause;
  a patient without an event is censored at the last contact, which is the
  latest of the ``last_follow_up`` outcome and every other record the service
  holds for the patient;
- the ELIANA-style sensitivity analysis censors at consolidative HSCT or new
  therapy in remission, whichever comes first before an event;
- OS events are deaths from any cause;
- the CRS group is 0, 1-2, 3-4, or 5 (death from CRS) on its own;
- ``landmark28_eligible``: event-free and followed beyond day 28.

Missing outcome data is reported, never read as "no event": the row says
where follow-up ended (``follow_up_source``) and lists its doubts in
``outcome_flags`` (no day-28 assessment recorded, records after a death, a
relapse without a recorded response, more than one death).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from crsmon.domain.records import (
    OutcomeRecord,
    OxygenRecord,
    PatientTimeline,
    Quantity,
)
from crsmon.domain.results import EpisodeResult
from crsmon.domain.rules import AgentRole, RuleSet
from crsmon.domain.vocab import OxygenDevice, TreatmentDrug

_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)

RESPONSE_DAY = 28.0
"""The day the response is assessed; a non-response is an EFS event then."""

LANDMARK_DAYS = 28.0
"""The landmark of ``landmark28_eligible`` (risk.md §5.2, the primary analysis)."""

FEVER_C = 38.0
HIGH_FEVER_C = 38.9
EARLY_FEVER_H = 36.0

ANTICYTOKINE_OTHER = (
    TreatmentDrug.SILTUXIMAB,
    TreatmentDrug.ANAKINRA,
    TreatmentDrug.OTHER_ANTICYTOKINE,
)
STEROIDS = frozenset(
    {
        TreatmentDrug.DEXAMETHASONE,
        TreatmentDrug.METHYLPREDNISOLONE,
        TreatmentDrug.HYDROCORTISONE,
        TreatmentDrug.PREDNISONE,
        TreatmentDrug.PREDNISOLONE,
        TreatmentDrug.OTHER_CORTICOSTEROID,
    }
)
ANTIPYRETICS = frozenset(
    {
        TreatmentDrug.ACETAMINOPHEN,
        TreatmentDrug.IBUPROFEN,
        TreatmentDrug.KETOROLAC,
        TreatmentDrug.METAMIZOLE,
        TreatmentDrug.NAPROXEN,
        TreatmentDrug.OTHER_ANTIPYRETIC,
    }
)
POSITIVE_PRESSURE = frozenset({OxygenDevice.CPAP, OxygenDevice.BIPAP})
ICU_DEVICES = POSITIVE_PRESSURE | {
    OxygenDevice.HIGH_FLOW_NASAL_CANNULA,
    OxygenDevice.INVASIVE_MECHANICAL_VENTILATION,
}
"""Oxygen support that counts as ICU-level (with any vasopressor, vasopressin
included): high-flow nasal cannula, CPAP, BiPAP, invasive ventilation. Masks
are grade-3 support under ASTCT but are given on wards, so they do not count."""


@dataclass(frozen=True, slots=True)
class CrsSummary:
    """The CRS part of a grade-table row (hours since infusion)."""

    crs_any: bool
    crs_max_grade_astct: int
    crs_group: str
    crs_onset_h: float | None
    time_to_max_grade_h: float | None
    crs_resolution_h: float | None
    crs_duration_h: float | None
    crs_courses: int
    crs_driver: str
    first_grade_ge1_h: float | None
    first_grade_ge2_h: float | None
    first_grade_ge3_h: float | None
    first_grade_ge4_h: float | None
    grade5_h: float | None
    missing_input_moments: int
    """Graded moments with at least one input the grade needed and did not have."""


@dataclass(frozen=True, slots=True)
class SupportSummary:
    """Organ support and treatments after infusion."""

    max_vasopressor_count: int
    vasopressin_used: bool
    max_o2_device: str | None
    max_o2_level: int
    max_o2_flow_l_min: float | None
    positive_pressure_ventilation: bool
    intubation: bool
    icu_level_support: bool
    tocilizumab_doses: int
    first_tocilizumab_h: float | None
    steroids_any: bool
    first_steroid_h: float | None
    other_anticytokine: str | None
    antipyretics_any: bool
    peak_crp_mg_l: float | None
    peak_ferritin_ug_l: float | None
    peak_il6_pg_ml: float | None
    first_fever_h: float | None
    tmax_first_36h_c: float | None
    fever_ge_38_9_within_36h: bool | None
    """None: no temperature recorded in the first 36 h (not "no fever")."""


@dataclass(frozen=True, slots=True)
class OutcomeSummary:
    """Response, events and the derived survival endpoints (days since infusion)."""

    response_d28: str
    """``response``, ``no_response`` or ``not_recorded``."""
    mrd_negative_d28: bool | None
    hsct_consolidation: bool
    hsct_day: float | None
    relapse: bool
    relapse_day: float | None
    death: bool
    death_day: float | None
    death_attributable_to_crs: bool | None
    new_therapy_day: float | None
    last_contact_day: float
    follow_up_source: str
    """``last_follow_up`` (a recorded follow-up is the latest contact) or
    ``last_record`` (follow-up inferred from the latest record held)."""
    efs_time_days: float
    efs_event: bool
    efs_event_type: str
    """``none``, ``nr``, ``relapse`` or ``death``."""
    efs_censored_at_hsct_time: float
    efs_censored_at_hsct_event: bool
    os_time_days: float
    os_event: bool
    landmark28_eligible: bool
    outcome_flags: tuple[str, ...]


def crs_group(grade: int) -> str:
    """The CRS group of a maximum grade: 0, 1-2, 3-4, or 5 on its own."""
    if grade >= 5:
        return "5"
    if grade >= 3:
        return "3-4"
    if grade >= 1:
        return "1-2"
    return "0"


def _first_at(result: EpisodeResult, level: int) -> float | None:
    return next(
        (o.t_hours for o in result.observations if o.result.grade >= level), None
    )


def _driver(result: EpisodeResult) -> str:
    """Which organ finding carried a grade >= 2 at any moment of the course."""
    if result.grade == 0:
        return "none"
    organs = {
        reason.finding
        for o in result.observations
        if o.result.grade >= 2
        for reason in o.result.reasons
        if reason.finding in ("hypotension", "hypoxia")
        and reason.grade is not None
        and reason.grade >= 2
    }
    if organs == {"hypotension", "hypoxia"}:
        return "both"
    if organs:
        return organs.pop()
    return "fever_only" if result.grade < 5 else "death_without_organ_finding"


def summarise_crs(result: EpisodeResult) -> CrsSummary:
    """The CRS columns of a patient's graded episode."""
    return CrsSummary(
        crs_any=result.grade >= 1,
        crs_max_grade_astct=result.grade,
        crs_group=crs_group(result.grade),
        crs_onset_h=result.onset_t_hours,
        time_to_max_grade_h=result.max_grade_t_hours,
        crs_resolution_h=result.resolution_t_hours,
        crs_duration_h=result.duration_hours,
        crs_courses=len(result.courses),
        crs_driver=_driver(result),
        first_grade_ge1_h=_first_at(result, 1),
        first_grade_ge2_h=_first_at(result, 2),
        first_grade_ge3_h=_first_at(result, 3),
        first_grade_ge4_h=_first_at(result, 4),
        grade5_h=_first_at(result, 5),
        missing_input_moments=sum(
            1 for o in result.observations if o.result.missing_inputs
        ),
    )


def _hours(timeline: PatientTimeline, at: datetime) -> float:
    return (at - timeline.infusion_at) / _HOUR


def _days(timeline: PatientTimeline, at: datetime) -> float:
    return (at - timeline.infusion_at) / _DAY


def _max_concurrent_pressors(timeline: PatientTimeline, rules: RuleSet) -> int:
    """The most distinct vasopressors running at once after infusion,
    vasopressin-like agents not counted (R5: one vasopressor with or without
    vasopressin is grade 3, several are 4; two records of the same drug, a
    pump change, are one agent as the grader counts them, A9)."""
    pressors = [
        i
        for i in timeline.infusions
        if rules.agent_role(i.drug) is AgentRole.VASOPRESSOR
        and (i.stopped_at is None or i.stopped_at > timeline.infusion_at)
    ]
    best = 0
    for start in pressors:
        running = {
            other.drug
            for other in pressors
            if other.started_at <= start.started_at
            and (other.stopped_at is None or other.stopped_at > start.started_at)
        }
        best = max(best, len(running))
    return best


def _oxygen_level(record: OxygenRecord, rules: RuleSet) -> int:
    """The ASTCT hypoxia grade the support alone would carry (0 for room air)."""
    if record.device is OxygenDevice.ROOM_AIR or record.for_comfort_only:
        return 0
    rule = rules.device_rule(record.device)
    if rule.by_flow and record.flow_l_min is not None:
        return 2 if record.flow_l_min <= rules.low_flow_max_l_min else 3
    return rule.grade


def _peak(timeline: PatientTimeline, quantity: Quantity) -> float | None:
    return max(
        (
            m.value
            for m in timeline.measurements
            if m.quantity is quantity and m.observed_at >= timeline.infusion_at
        ),
        default=None,
    )


def summarise_support(timeline: PatientTimeline, rules: RuleSet) -> SupportSummary:
    """Organ support, treatments, peak labs and early fever after infusion."""
    after = timeline.infusion_at
    oxygen = [o for o in timeline.oxygen if o.observed_at >= after]
    levels = [(_oxygen_level(o, rules), o) for o in oxygen]
    order = list(OxygenDevice)
    top = max(
        ((level, order.index(o.device), o.device.value) for level, o in levels),
        default=(0, 0, None),
    )
    top_level, top_device = top[0], top[2] if top[0] > 0 else None
    flows = [
        o.flow_l_min
        for o in oxygen
        if o.flow_l_min is not None and not o.for_comfort_only
    ]
    devices = {o.device for o in oxygen if not o.for_comfort_only}
    treatments = sorted(
        (t for t in timeline.treatments if t.given_at >= after),
        key=lambda t: t.given_at,
    )
    toci = [t for t in treatments if t.drug is TreatmentDrug.TOCILIZUMAB]
    steroids = [t for t in treatments if t.drug in STEROIDS]
    others = sorted({t.drug.value for t in treatments if t.drug in ANTICYTOKINE_OTHER})
    pressors = _max_concurrent_pressors(timeline, rules)
    vasopressin = any(
        rules.agent_role(i.drug) is AgentRole.VASOPRESSIN_LIKE
        and (i.stopped_at is None or i.stopped_at > after)
        for i in timeline.infusions
    )
    temperatures = sorted(
        (
            m
            for m in timeline.measurements
            if m.quantity is Quantity.TEMPERATURE_C and m.observed_at >= after
        ),
        key=lambda m: m.observed_at,
    )
    first_fever = next((m for m in temperatures if m.value >= FEVER_C), None)
    early = [
        m.value
        for m in temperatures
        if _hours(timeline, m.observed_at) <= EARLY_FEVER_H
    ]
    tmax = max(early, default=None)
    return SupportSummary(
        max_vasopressor_count=pressors,
        vasopressin_used=vasopressin,
        max_o2_device=top_device,
        max_o2_level=top_level,
        max_o2_flow_l_min=max(flows, default=None),
        positive_pressure_ventilation=bool(devices & POSITIVE_PRESSURE),
        intubation=OxygenDevice.INVASIVE_MECHANICAL_VENTILATION in devices,
        icu_level_support=pressors > 0 or vasopressin or bool(devices & ICU_DEVICES),
        tocilizumab_doses=len(toci),
        first_tocilizumab_h=_hours(timeline, toci[0].given_at) if toci else None,
        steroids_any=bool(steroids),
        first_steroid_h=_hours(timeline, steroids[0].given_at) if steroids else None,
        other_anticytokine=",".join(others) or None,
        antipyretics_any=any(t.drug in ANTIPYRETICS for t in treatments),
        peak_crp_mg_l=_peak(timeline, Quantity.CRP_MG_L),
        peak_ferritin_ug_l=_peak(timeline, Quantity.FERRITIN_UG_L),
        peak_il6_pg_ml=_peak(timeline, Quantity.IL6_PG_ML),
        first_fever_h=(
            None if first_fever is None else _hours(timeline, first_fever.observed_at)
        ),
        tmax_first_36h_c=tmax,
        fever_ge_38_9_within_36h=None if tmax is None else tmax >= HIGH_FEVER_C,
    )


def _first(outcomes: Sequence[OutcomeRecord], event: str) -> OutcomeRecord | None:
    return next((o for o in outcomes if o.event == event), None)


def summarise_outcomes(
    timeline: PatientTimeline, record_times: Iterable[datetime]
) -> OutcomeSummary:
    """Response, events and the EFS/OS endpoints (see the module docstring).

    ``record_times`` are the times of every current record of the patient
    (any kind): the latest of them bounds the follow-up when no later
    ``last_follow_up`` outcome is recorded.
    """
    outcomes = sorted(timeline.outcomes, key=lambda o: (o.at, o.record_id))
    flags: list[str] = []
    response = _first(outcomes, "response")
    no_response = _first(outcomes, "no_response")
    relapse = _first(outcomes, "relapse")
    deaths = [o for o in outcomes if o.event == "death"]
    death = deaths[0] if deaths else None
    hsct = _first(outcomes, "hsct")
    new_therapy = _first(outcomes, "new_therapy")
    follow_ups = [o.at for o in outcomes if o.event == "last_follow_up"]

    def day(record: OutcomeRecord | None) -> float | None:
        return None if record is None else _days(timeline, record.at)

    if response is not None and no_response is not None:
        flags.append("response_and_no_response")
    if len(deaths) > 1:
        flags.append("more_than_one_death")
    if relapse is not None and response is None:
        flags.append("relapse_without_recorded_response")
    times = [timeline.infusion_at, *record_times, *(o.at for o in outcomes)]
    latest = max(times)
    latest_follow_up = max(follow_ups, default=None)
    source = (
        "last_follow_up"
        if latest_follow_up is not None and latest_follow_up >= latest
        else "last_record"
    )
    last_contact = _days(timeline, latest)
    if death is not None and latest > death.at:
        flags.append("records_after_death")
        last_contact = _days(timeline, death.at)
    events: list[tuple[float, str]] = []
    if no_response is not None:
        events.append((RESPONSE_DAY, "nr"))
    if relapse is not None:
        events.append((_days(timeline, relapse.at), "relapse"))
    if death is not None:
        events.append((_days(timeline, death.at), "death"))
    event = min(events, default=None)
    assessed = response is not None or no_response is not None
    unassessed = not assessed and (event is None or event[0] > RESPONSE_DAY)
    if unassessed and last_contact > RESPONSE_DAY:
        flags.append("no_day28_assessment_recorded")
    efs_time, efs_type = (last_contact, "none") if event is None else event
    censor_day = min(
        (d for d in (day(hsct), day(new_therapy)) if d is not None), default=None
    )
    in_remission = (
        response is not None
        and efs_type != "nr"
        and censor_day is not None
        and _days(timeline, response.at) <= censor_day
    )
    if in_remission and censor_day is not None and censor_day < efs_time:
        hsct_time, hsct_event = censor_day, False
    else:
        hsct_time, hsct_event = efs_time, event is not None
    death_day = day(death)
    return OutcomeSummary(
        response_d28=(
            "response"
            if response is not None
            else "no_response"
            if no_response is not None
            else "not_recorded"
        ),
        mrd_negative_d28=None if response is None else response.mrd_negative,
        hsct_consolidation=hsct is not None,
        hsct_day=day(hsct),
        relapse=relapse is not None,
        relapse_day=day(relapse),
        death=death is not None,
        death_day=death_day,
        death_attributable_to_crs=(
            None if death is None else death.death_attributable_to_crs
        ),
        new_therapy_day=day(new_therapy),
        last_contact_day=last_contact,
        follow_up_source=source,
        efs_time_days=efs_time,
        efs_event=event is not None,
        efs_event_type=efs_type,
        efs_censored_at_hsct_time=hsct_time,
        efs_censored_at_hsct_event=hsct_event,
        os_time_days=last_contact if death_day is None else death_day,
        os_event=death is not None,
        landmark28_eligible=efs_time > LANDMARK_DAYS,
        outcome_flags=tuple(flags),
    )


@dataclass(frozen=True, slots=True)
class Interval:
    """One start/stop row of the time-varying EFS data (risk.md §5.5 b)."""

    start_day: float
    stop_day: float
    event: bool
    hsct_tv: bool
    severe_crs_tv: bool


def efs_intervals(
    efs_time_days: float,
    efs_event: bool,
    hsct_day: float | None,
    severe_crs_day: float | None,
) -> tuple[Interval, ...]:
    """A patient's EFS follow-up split where HSCT or grade >= 3 begins.

    A change at or after the end of follow-up does not split it; a change at
    day 0 starts the covariate at 1. The event, if any, is on the last row; a
    patient with no follow-up time has no rows.
    """
    end = efs_time_days
    changes = sorted(
        {d for d in (hsct_day, severe_crs_day) if d is not None and 0 < d < end}
    )
    cuts = [0.0, *changes, end]
    return tuple(
        Interval(
            start_day=start,
            stop_day=stop,
            event=efs_event and stop == end,
            hsct_tv=hsct_day is not None and hsct_day <= start,
            severe_crs_tv=severe_crs_day is not None and severe_crs_day <= start,
        )
        for start, stop in pairwise(cuts)
        if stop > start
    )
