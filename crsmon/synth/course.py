"""The clinical course of one synthetic patient, on the hours-since-infusion clock.

risk.md §3.4–3.5 in a first, small form: a CRS course with fever onset on day
1–5, escalation through fluids or low-flow oxygen (grade 2), one vasopressor or
high-flow oxygen (grade 3) and two vasopressors or BiPAP (grade 4), a plateau,
a step-down and resolution; usual care (acetaminophen, tocilizumab,
dexamethasone, always given after onset); 4-hourly vitals, oxygen charted at
every change and every 8 h, CRP every 12 h and ferritin and IL-6 every 24 h.

The course is built so that its highest grade is the patient's potential grade
(``toci_modifies_course = false`` in §3.5): the truth a grader round trip can
be checked against. Everything is in whole minutes since infusion, so times
map to wall-clock time exactly. Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from crsmon.synth.cohort import Baseline, CohortDesign, patient_rng

SYNTHETIC = "SYNTHETIC"
"""Starts every free-text value, so no synthetic record passes for a real one."""

_H = 60
"""Minutes per hour."""

ONSET_MEDIAN_H = {1: 96.0, 2: 72.0, 3: 48.0, 4: 30.0}
TMAX_MEAN_C = {1: 38.6, 2: 39.2, 3: 39.6, 4: 40.0}
FEVER_MEDIAN_H = {1: 48.0, 2: 72.0, 3: 96.0, 4: 120.0}
CRP_PEAK_MG_L = (15.0, 50.0, 100.0, 160.0, 220.0)
IL6_PEAK_PG_ML = (15.0, 60.0, 250.0, 1000.0, 3000.0)
FERRITIN_PEAK_UG_L = (1500.0, 2000.0, 3500.0, 10000.0, 30000.0)
DEXAMETHASONE_P = {2: 0.15, 3: 0.5, 4: 0.9}


@dataclass(frozen=True, slots=True)
class Event:
    """One charted event; the feed renders it as one record.

    ``at_min`` is the event's own time (observed, given, started); ``sent_min``
    is when the record is sent, if later (a correction). ``key`` names the event
    so a later one can point at it (``refers_to``): a vasopressor stop at its
    start, a correction at the record it corrects.
    """

    at_min: int
    kind: str
    fields: dict[str, Any]
    key: str | None = None
    refers_to: str | None = None
    sent_min: int | None = None
    end_min: int | None = None

    @property
    def sent(self) -> int:
        """When the record is sent (minutes since infusion)."""
        return self.at_min if self.sent_min is None else self.sent_min


@dataclass(frozen=True, slots=True)
class Course:
    """A patient's charted events and the ground truth they were built from."""

    baseline: Baseline
    horizon_min: int
    events: tuple[Event, ...]
    max_grade: int
    """The highest ASTCT grade the charted events express (the truth)."""
    onset_min: int | None
    """The first febrile vitals set of the CRS course (the graded onset)."""
    peak_min: int | None
    """When the highest grade is first reached."""
    support_end_min: int | None
    tocilizumab_doses: int
    truth: dict[str, Any] = field(default_factory=dict)


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0, sigma))


def _truncated(
    rng: random.Random, median: float, sigma: float, low: float, high: float
) -> float:
    """A lognormal draw within [low, high] (redrawn, so no mass piles at a bound)."""
    for _ in range(1000):
        value = _lognormal(rng, median, sigma)
        if low <= value <= high:
            return value
    return _clip(median, low, high)


def _clip(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def _minute(hours: float) -> int:
    return round(hours * _H)


def sbp_limits(age_years: float) -> tuple[float, float]:
    """SBP a synthetic reading must stay below (hypotensive) or above (normal).

    The strictest and the most lenient of the pediatric thresholds crsmon can
    grade with (PALS 70 + 2 × age, Haque 65 + 2 × age, 90 from 10 or 18 years),
    so a reading means the same under every rule-set setting.
    """
    years = math.floor(age_years)
    pals = 70.0 + 2 * years if years < 10 else 90.0
    haque = 65.0 + 2 * years if years < 18 else 90.0
    return min(pals, haque), max(pals, haque)


@dataclass
class _Plan:
    """The hidden course, in hours since infusion."""

    onset_h: float | None = None
    fever_end_h: float | None = None
    tmax_c: float = 0.0
    levels: list[tuple[float, int]] = field(default_factory=list)
    """(start, support level 0/2/3/4) in time order; level 0 ends support."""
    infection: tuple[float, float, float] | None = None
    """(start, end, tmax) of a fever attributed to infection."""
    toci_h: list[float] = field(default_factory=list)
    dexa_h: list[float] = field(default_factory=list)

    def level(self, t: float) -> int:
        current = 0
        for start, level in self.levels:
            if start <= t:
                current = level
        return current

    def febrile(self, t: float) -> float | None:
        onset, end = self.onset_h, self.fever_end_h
        if onset is not None and end is not None and onset <= t < end:
            return self.tmax_c
        if self.infection is not None and self.infection[0] <= t < self.infection[1]:
            return self.infection[2]
        return None


def _plan(b: Baseline, rng: random.Random, horizon_h: float) -> _Plan:
    plan = _Plan()
    g = b.potential_grade
    if b.infection_fever and horizon_h >= 96:
        start = rng.uniform(min(168.0, horizon_h / 2), min(264.0, horizon_h - 48))
        plan.infection = (start, start + rng.uniform(20, 44), rng.uniform(38.4, 39.3))
    if g == 0:
        return plan
    plan.onset_h = onset = _truncated(
        rng, ONSET_MEDIAN_H[g], 0.6, 12, min(120.0, horizon_h / 2)
    )
    plan.tmax_c = _clip(rng.gauss(TMAX_MEAN_C[g], 0.35), 38.3, 41.0)
    support_start = None
    if g >= 2:
        t = onset + _clip(_lognormal(rng, 12, 0.7), 4, 36)
        support_start = t
        plan.levels.append((t, 2))
        for level in range(3, g + 1):
            t += _clip(_lognormal(rng, 36, 0.6), 8, 72)
            plan.levels.append((t, level))
        plan.toci_h = _tocilizumab(rng, g, plan.levels)
        shorten = 0.6 if plan.toci_h else 1.0
        t += _clip(_lognormal(rng, 48, 0.6), 12, 120)
        peak_start = plan.levels[-1][0]
        for level in range(g - 1, 1, -1):
            plan.levels.append((t, level))
            t += max(8.0, shorten * _clip(_lognormal(rng, 24, 0.4), 8, 48))
        plan.levels.append((t, 0))
        steroid = g >= 3 or bool(plan.toci_h)  # §3.5: at grade 2 only with toci
        if steroid and rng.random() < DEXAMETHASONE_P[g]:
            first = peak_start + rng.uniform(2, 12)
            plan.dexa_h = [first + 6 * i for i in range(rng.randint(1, 4))]
    untreated = onset + _clip(_lognormal(rng, FEVER_MEDIAN_H[g], 0.45), 12, 240)
    if plan.toci_h:
        plan.fever_end_h = plan.toci_h[0] + _clip(_lognormal(rng, 6, 0.5), 2, 16)
    elif support_start is not None:
        plan.fever_end_h = max(untreated, support_start + 8)
    else:
        plan.fever_end_h = untreated
        if untreated - onset > 72 and rng.random() < 0.10:  # grade 1, fever > 72 h
            plan.toci_h = [onset + 72]
            plan.fever_end_h = onset + 72 + _clip(_lognormal(rng, 6, 0.5), 2, 16)
    return plan


def _tocilizumab(
    rng: random.Random, grade: int, levels: list[tuple[float, int]]
) -> list[float]:
    """§3.5: at grade 2 with p = 0.55, at grade 3 with p = 0.95; 1–3 doses."""
    first = None
    if rng.random() < 0.55:
        first = levels[0][0] + rng.uniform(0, 6)
    elif grade >= 3 and rng.random() < 0.95:
        first = levels[1][0] + rng.uniform(0, 3)
    if first is None:
        return []
    doses = rng.choices((1, 2, 3), (55, 32, 13))[0]
    times = [first]
    for _ in range(doses - 1):
        times.append(times[-1] + rng.uniform(8, 12))
    return times


_DEVICE = {
    0: ("room_air", None, None),
    2: ("nasal_cannula", "low", None),
    3: ("high_flow_nasal_cannula", "high", 0.4),
    4: ("bipap", None, 0.5),
}


def simulate(b: Baseline, seed: int, horizon_min: int, design: CohortDesign) -> Course:
    """The charted course of ``b`` from infusion (minute 0) to ``horizon_min``."""
    rng = patient_rng(seed, b.index, "course")
    horizon_h = horizon_min / _H
    plan = _plan(b, rng, horizon_h)
    organ = b.organ or ""
    hypotension = organ in ("hypotension", "both")
    hypoxia = organ in ("hypoxia", "both")
    vitals, acetaminophen = _vitals_events(
        plan, b, rng, hypotension, hypoxia, design, horizon_min
    )
    events = vitals + _treatment_events(plan, b, rng, hypotension, acetaminophen)
    events += _oxygen_events(plan, b, rng, hypoxia, design, horizon_min)
    events += _lab_events(plan, b, rng, design, horizon_min)
    events += _attribution_events(plan, vitals, horizon_min)
    events = [e for e in events if e.sent <= horizon_min]
    events.sort(key=lambda e: (e.sent, e.at_min))
    return _course(b, plan, events, horizon_min, hypotension or hypoxia)


def _course(
    b: Baseline, plan: _Plan, events: list[Event], horizon_min: int, organ: bool
) -> Course:
    onset = None
    if plan.onset_h is not None:
        onset = next(
            (
                e.at_min
                for e in events
                if e.kind == "vitals"
                and e.at_min >= _minute(plan.onset_h)
                and e.fields.get("temperature_c", 0) >= 38.0
            ),
            None,
        )
    max_grade, peak = (0, None) if onset is None else (1, onset)
    if onset is not None and organ:
        for start, level in plan.levels:
            # Each level is charted within 15 min of its start (a device, a
            # vasopressor or a bolus record).
            if level > max_grade and _minute(start) + 15 <= horizon_min:
                max_grade, peak = level, _minute(start)
    ends = [s for s, level in plan.levels if level == 0]
    return Course(
        baseline=b,
        horizon_min=horizon_min,
        events=tuple(events),
        max_grade=max_grade,
        onset_min=onset,
        peak_min=peak,
        support_end_min=_minute(ends[0]) if ends else None,
        tocilizumab_doses=sum(1 for t in plan.toci_h if _minute(t) <= horizon_min),
        truth={
            "potential_grade": b.potential_grade,
            "organ": b.organ,
            "fever_onset_h": plan.onset_h,
            "fever_end_h": plan.fever_end_h,
            "support_levels_h": [(round(s, 2), level) for s, level in plan.levels],
            "infection_fever_h": plan.infection,
        },
    )


def _treatment_events(
    plan: _Plan,
    b: Baseline,
    rng: random.Random,
    hypotension: bool,
    acetaminophen: list[int],
) -> list[Event]:
    doses = [(a, "acetaminophen") for a in acetaminophen]
    doses += [(_minute(t), "tocilizumab") for t in plan.toci_h]
    doses += [(_minute(t), "dexamethasone") for t in plan.dexa_h]
    if plan.levels and plan.onset_h is not None:
        # Usual care gives every course that needs support a fever-masking drug
        # while the fever lasts (R3 then carries the grade once it settles).
        start = _minute(plan.levels[0][0])
        onset = _minute(plan.onset_h)
        if not any(onset <= t <= start + 6 * _H for t, _ in doses):
            doses.append((start, "acetaminophen"))
    events = [Event(t, "treatment", {"drug": drug}) for t, drug in sorted(doses)]
    if hypotension:
        events += _hemodynamic_events(plan, b, rng)
    return events


def _hemodynamic_events(plan: _Plan, b: Baseline, rng: random.Random) -> list[Event]:
    events = []
    volume = float(min(1000, round(20 * b.weight_kg / 10) * 10))
    previous = 0
    running: list[str] = []
    for start, level in plan.levels:
        t = _minute(start)
        if level == 2:
            bolus = {"for_hypotension": True, "volume_ml": volume}
            if previous == 0:  # 1–3 boluses as the blood pressure falls
                for i in range(rng.randint(1, 3)):
                    events.append(Event(t + 15 + 90 * i, "fluid_bolus", bolus))
            else:  # a bolus as the vasopressor is weaned off
                events.append(Event(t, "fluid_bolus", bolus))
        while len(running) > max(0, level - 2):
            key = running.pop()
            events.append(Event(t, "vasopressor_stop", {}, refers_to=key))
        while len(running) < max(0, level - 2):
            drug = ("norepinephrine", "epinephrine")[len(running)]
            low, high = (0.05, 0.2) if drug == "norepinephrine" else (0.05, 0.1)
            key = f"{drug}-{t}"
            dose = {"drug": drug, "dose": round(rng.uniform(low, high), 2)}
            events.append(
                Event(t, "vasopressor_start", {**dose, "unit": "ug/kg/min"}, key=key)
            )
            running.append(key)
        previous = level
    return events


def _device(level: int, b: Baseline, flow_nc: float) -> dict[str, Any]:
    device, flow, fio2 = _DEVICE[level]
    record: dict[str, Any] = {"device": device}
    if flow == "low":
        record["flow_l_min"] = flow_nc
    elif flow == "high":
        record["flow_l_min"] = float(min(40, max(10, round(b.weight_kg))))
    if fio2 is not None:
        record["fio2"] = fio2
    return record


def _oxygen_events(
    plan: _Plan,
    b: Baseline,
    rng: random.Random,
    hypoxia: bool,
    design: CohortDesign,
    horizon_min: int,
) -> list[Event]:
    flow_nc = float(rng.randint(1, 4))
    changes = [(0, 0)]
    if hypoxia:
        changes += [(_minute(s), level) for s, level in plan.levels]
    chart = 2 * design.vitals_every_h * _H
    events = []
    for i, (start, level) in enumerate(changes):
        end = changes[i + 1][0] if i + 1 < len(changes) else horizon_min + 1
        times = {start} | set(range(-(-start // chart) * chart, end, chart))
        events += [
            Event(t, "oxygen", _device(level, b, flow_nc))
            for t in sorted(times)
            if t < end and t <= horizon_min
        ]
    return events


def _vitals_events(
    plan: _Plan,
    b: Baseline,
    rng: random.Random,
    hypotension: bool,
    hypoxia: bool,
    design: CohortDesign,
    horizon_min: int,
) -> tuple[list[Event], list[int]]:
    age = b.age_years
    sbp0 = rng.gauss(90 + 2 * age if age <= 10 else 110, 8)
    sbp0 = max(sbp0, sbp_limits(age + 0.1)[1] + 8)
    hr0 = max(70.0, 135 - 4 * age) + rng.gauss(0, 5)
    rr0 = max(14.0, 28 - age)
    temp0 = rng.gauss(36.8, 0.2)
    phase = rng.uniform(0, 24)
    step = design.vitals_every_h * _H
    acetaminophen: list[int] = []
    events = []
    for t in range(0, horizon_min + 1, step):
        hours = t / _H
        years = age + hours / (365.25 * 24)
        low, high = sbp_limits(years)
        level = plan.level(hours)
        febrile = plan.febrile(hours)
        if febrile is not None:
            temp = max(38.0, round(febrile - abs(rng.gauss(0, 0.35)), 1))
            if any(0 < t - a <= 4 * _H for a in acetaminophen):
                temp = round(temp - 0.6, 1)
            elif temp >= 38.5 and rng.random() < 0.7:
                acetaminophen.append(t + 30)
        else:
            diurnal = 0.3 * math.sin(2 * math.pi * (hours + phase) / 24)
            temp = min(37.7, round(temp0 + diurnal + rng.gauss(0, 0.15), 1))
        hypo = level if hypotension else 0
        if hypo == 0:
            sbp = max(round(rng.gauss(sbp0, 5)), round(high) + 4)
        elif hypo == 2:
            sbp = min(round(sbp0 * (1 - rng.uniform(0.20, 0.35))), round(low) - 3)
        else:
            sbp = round(rng.uniform(low - 6, low + 8))
        dbp = round(sbp * rng.uniform(0.52, 0.62))
        fever_c = max(0.0, temp - 37)
        hr = hr0 * (1.15 if hypo else 1.0) + 10 * fever_c + rng.gauss(0, 4)
        ox = level if hypoxia else 0
        rr = rr0 + 2 * fever_c + (6 if ox else 0) + rng.gauss(0, 1.5)
        rising = hypoxia and plan.level(hours + design.vitals_every_h) > ox
        if rising:
            spo2 = rng.randint(86, 89) if ox == 0 else rng.randint(88, 91)
        else:
            spo2 = rng.randint(95, 100) if ox == 0 else rng.randint(92, 97)
        values = {
            "temperature_c": temp,
            "sbp_mmhg": sbp,
            "dbp_mmhg": dbp,
            "heart_rate_per_min": round(min(200.0, hr)),
            "respiratory_rate_per_min": round(rr),
            "spo2_pct": spo2,
        }
        events.append(Event(t, "vitals", values))
    return events, acetaminophen


def _curve(
    t: float, start: float, peak_at: float, half_lives: list[tuple[float, float]]
) -> float:
    """0 before ``start``, rising to 1 at ``peak_at``, then decaying.

    ``half_lives`` are (from hour, half-life) pieces in time order.
    """
    if t <= start:
        return 0.0
    if t <= peak_at:
        return float(((t - start) / (peak_at - start)) ** 1.5)
    halvings = 0.0
    for i, (frm, half_life) in enumerate(half_lives):
        until = half_lives[i + 1][0] if i + 1 < len(half_lives) else math.inf
        lo, hi = max(frm, peak_at), min(until, t)
        if hi > lo:
            halvings += (hi - lo) / half_life
    return float(0.5**halvings)


def _lab_events(
    plan: _Plan,
    b: Baseline,
    rng: random.Random,
    design: CohortDesign,
    horizon_min: int,
) -> list[Event]:
    g = b.potential_grade
    onset = plan.onset_h if plan.onset_h is not None else 72.0
    toci = plan.toci_h[0] if plan.toci_h else math.inf
    blasts = b.marrow_blast_pct
    base = {
        "crp": _clip(4 * math.exp(rng.gauss(0, 0.8) + 0.006 * blasts), 0.2, 40),
        "ferritin": 900 * math.exp(rng.gauss(0, 0.8)),
        "il6": 3 * math.exp(rng.gauss(0, 0.5)),
    }
    peak = {
        "crp": _lognormal(rng, CRP_PEAK_MG_L[g], 0.5),
        "ferritin": _lognormal(rng, FERRITIN_PEAK_UG_L[g], 1.0),
        "il6": _lognormal(rng, IL6_PEAK_PG_ML[g], 0.8),
    }
    shape = {
        "crp": (onset + 36, [(0.0, 36.0), (toci, 18.0)]),
        "ferritin": (onset + rng.uniform(72, 120), [(0.0, 96.0)]),
        "il6": (onset + rng.uniform(12, 24), [(0.0, 12.0)]),
    }
    units = {"crp": "mg/L", "ferritin": "ng/mL", "il6": "pg/mL"}
    digits = {"crp": 1, "ferritin": 0, "il6": 1}
    every = {
        "crp": design.crp_every_h * _H,
        "ferritin": design.labs_every_h * _H,
        "il6": design.labs_every_h * _H,
    }
    events = []
    for analyte in ("crp", "ferritin", "il6"):
        peak_at, half_lives = shape[analyte]
        for t in range(0, horizon_min + 1, every[analyte]):
            level = _curve(t / _H, onset - 6, peak_at, half_lives)
            value = (base[analyte] + peak[analyte] * level) * math.exp(
                rng.gauss(0, 0.08)
            )
            fields = {
                "analyte": analyte,
                "value": round(value, digits[analyte]),
                "unit": units[analyte],
            }
            events.append(Event(t, "lab", fields))
    return events


def _attribution_events(
    plan: _Plan, vitals: list[Event], horizon_min: int
) -> list[Event]:
    """A fever from infection, attributed at once; closed by a correction later."""
    if plan.infection is None:
        return []
    start, end, _ = plan.infection
    febrile = [
        e.at_min
        for e in vitals
        if _minute(start) <= e.at_min < _minute(end) + 4 * _H
        and e.fields["temperature_c"] >= 38.0
    ]
    if not febrile:
        return []
    fields = {
        "finding": "fever",
        "by": f"{SYNTHETIC} attending (demo)",
        "reason": f"{SYNTHETIC}: febrile neutropenia, blood cultures taken (demo data)",
    }
    key = f"attribution-{febrile[0]}"
    events = [Event(febrile[0], "attribution", fields, key=key)]
    closed = febrile[-1] + 28 * _H  # the fever has left the 24 h look-back
    if closed <= horizon_min:
        reason = f"{SYNTHETIC}: infection treated, attribution closed (demo data)"
        events.append(
            Event(
                febrile[0],
                "attribution",
                {**fields, "correction_reason": reason},
                refers_to=key,
                sent_min=closed,
                end_min=closed,
            )
        )
    return events
