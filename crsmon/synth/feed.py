"""The synthetic cohort as a bedside feed: one strict feed record per line.

Each course's events (minutes since infusion) become feed records
(docs/feed-format.md) at wall-clock times. :class:`Renderer` does this for one
patient (the demo and the study of :mod:`crsmon.synth.study` share it).

:func:`build_feed` is the demo's feed: every patient's infusion lies ``days``
days (and a few minutes more, so patients are not in lockstep) before ``now``,
and every record's time is at or before ``now``. By default a handful of
deliberately faulty lines are planted among them, each marked with the reason
it must be refused, and one line is re-sent to show that a duplicate is stored
once.

Pure: ``now`` comes in, lines go out. No clock, no I/O.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from crsmon.synth.cohort import DEMO_DESIGN, Baseline, CohortDesign, draw_cohort
from crsmon.synth.course import SYNTHETIC, Course, Event, care_unit, simulate
from crsmon.synth.outcomes import Outcomes

SOURCE_SYSTEM = "crsmon-synth"
"""The sender of every synthetic record (half of each idempotency key)."""

PRODUCT = f"{SYNTHETIC} anti-CD19/CD22 CAR T (synthetic data)"
NOT_ENROLLED = "SYN-0000"
"""A pseudonym no synthetic cohort uses (they start at ``SYN-0001``)."""

_TIME_FIELD = {
    "vitals": "observed_at",
    "oxygen": "observed_at",
    "lab": "observed_at",
    "vasopressor_start": "started_at",
    "vasopressor_stop": "stopped_at",
    "fluid_bolus": "given_at",
    "treatment": "given_at",
    "attribution": "start_at",
    "outcome": "at",
    "transfer": "transferred_at",
    "retraction": "at",
}


@dataclass(frozen=True, slots=True)
class FeedLine:
    """One line of the feed and what the intake should make of it."""

    at: datetime
    """When the line is sent: no time inside it is later."""
    text: str
    patient: str
    kind: str
    source_record_id: str
    expect: str = "stored"
    """``stored``, ``duplicate`` or ``refused``."""
    planted: str | None = None
    """Why this line is deliberately faulty or repeated (None: a good record)."""
    expect_error: str | None = None
    """The field the refusal must name (the start of its reason)."""


@dataclass(frozen=True, slots=True)
class SyntheticPatient:
    """A patient's baseline, charted course (with its truth) and infusion time."""

    baseline: Baseline
    course: Course
    infusion_at: datetime

    @property
    def pseudonym(self) -> str:
        """``SYN-0001``..."""
        return self.baseline.pseudonym

    @property
    def outcomes(self) -> Outcomes:
        """The patient's response, relapse, HSCT and death (uncensored truth)."""
        return self.course.outcomes


@dataclass(frozen=True, slots=True)
class SyntheticFeed:
    """The feed for one ``now``: lines in time order, and the patients behind it."""

    now: datetime
    seed: int
    days: int
    patients: tuple[SyntheticPatient, ...]
    lines: tuple[FeedLine, ...]

    @property
    def planted(self) -> tuple[FeedLine, ...]:
        """The deliberately faulty or repeated lines."""
        return tuple(line for line in self.lines if line.planted is not None)

    def ndjson(self) -> str:
        """The feed as NDJSON text (what ``crsmon ingest`` reads)."""
        return "".join(f"{line.text}\n" for line in self.lines)


def _iso(at: datetime) -> str:
    return at.isoformat()


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False)


class Renderer:
    """Numbers each patient's records (``SYN-0001:vitals:0042``) and writes them."""

    def __init__(self, patient: SyntheticPatient) -> None:
        self.patient = patient
        self.counts: Counter[str] = Counter()
        self.keys: dict[str, str] = {}
        self.lines = [self.enrolment()]
        self.lines += [self.event(e) for e in patient.course.events]

    def at(self, minutes: int) -> datetime:
        return self.patient.infusion_at + timedelta(minutes=minutes)

    def next_id(self, kind: str) -> str:
        self.counts[kind] += 1
        return f"{self.patient.pseudonym}:{kind}:{self.counts[kind]:04d}"

    def envelope(self, kind: str, record_id: str) -> dict[str, Any]:
        return {
            "kind": kind,
            "source_system": SOURCE_SYSTEM,
            "source_record_id": record_id,
            "patient": self.patient.pseudonym,
        }

    def enrolment(self) -> FeedLine:
        b = self.patient.baseline
        record_id = self.next_id("patient")
        record = {
            **self.envelope("patient", record_id),
            "age_years": b.age_years,
            "weight_kg": b.weight_kg,
            "care_unit": care_unit(b.site),
            "disease_status": b.disease_status,
            "marrow_blast_pct": b.marrow_blast_pct,
            "ldh_u_l": b.ldh_u_l,
            "product": {
                "name": PRODUCT,
                "dose_cells_per_kg": b.dose_cells_per_kg,
                "viability_pct": b.viability_pct,
            },
            "infusion_at": _iso(self.patient.infusion_at),
        }
        return self.line(self.patient.infusion_at, record)

    def event(self, event: Event) -> FeedLine:
        record_id = self.next_id(event.kind)
        if event.key is not None:
            self.keys[event.key] = record_id
        record = self.envelope(event.kind, record_id)
        fields = dict(event.fields)
        if event.kind == "attribution" and event.refers_to is not None:
            record["supersedes"] = self.keys[event.refers_to]
            record["correction_reason"] = fields.pop("correction_reason")
        record[_TIME_FIELD[event.kind]] = _iso(self.at(event.at_min))
        if event.kind == "attribution":
            record["end_at"] = (
                None if event.end_min is None else _iso(self.at(event.end_min))
            )
        if event.kind == "vasopressor_stop" and event.refers_to is not None:
            record["start_record_id"] = self.keys[event.refers_to]
        record.update(fields)
        return self.line(self.at(event.sent), record)

    def line(self, at: datetime, record: dict[str, Any], **kw: Any) -> FeedLine:
        return FeedLine(
            at=at,
            text=_dump(record),
            patient=str(record["patient"]),
            kind=str(record["kind"]),
            source_record_id=str(record["source_record_id"]),
            **kw,
        )


def planted_lines(
    renderers: list[Renderer], rng: random.Random, horizon_min: int
) -> list[FeedLine]:
    """Deliberately faulty lines (each must be refused) and one re-sent line."""
    lines: list[FeedLine] = []

    def pick() -> tuple[Renderer, int]:
        renderer = rng.choice(renderers)
        step = 4 * 60
        minutes = rng.randrange(step, max(step + 1, horizon_min - step), step)
        return renderer, minutes + rng.randint(2, 30)

    def vitals(r: Renderer, minutes: int, **values: Any) -> dict[str, Any]:
        record_id = f"{r.patient.pseudonym}:vitals:fault-{len(lines) + 1}"
        when = _iso(r.at(minutes))
        return {**r.envelope("vitals", record_id), "observed_at": when, **values}

    r, m = pick()
    record = vitals(r, m, temperature_c=50.0, heart_rate_per_min=96)
    lines.append(
        r.line(r.at(m), record, expect="refused", expect_error="temperature_c",
               planted="a temperature of 50 °C (probe artefact)")
    )  # fmt: skip
    r, m = pick()
    record = vitals(r, m, temperature_c=37.2)
    record["observed_at"] = r.at(m).replace(tzinfo=None).isoformat()
    lines.append(
        r.line(r.at(m), record, expect="refused", expect_error="observed_at",
               planted="a timestamp without a time zone")
    )  # fmt: skip
    r, m = pick()
    record = vitals(r, m, temperature_c=37.0, heart_rate=101)
    lines.append(
        r.line(r.at(m), record, expect="refused", expect_error="heart_rate",
               planted="an unknown field (heart_rate for heart_rate_per_min)")
    )  # fmt: skip
    r, m = pick()
    record = {
        **r.envelope("oxygen", f"{r.patient.pseudonym}:oxygen:fault-{len(lines) + 1}"),
        "observed_at": _iso(r.at(m)),
        "device": "simple_face_mask",
        "fio2": 40,
    }
    lines.append(
        r.line(r.at(m), record, expect="refused", expect_error="fio2",
               planted="FiO2 sent as a percentage (40) instead of a fraction")
    )  # fmt: skip
    r, m = pick()
    record = vitals(r, m, temperature_c=36.9, sbp_mmhg=104, dbp_mmhg=62)
    record["patient"] = stranger = NOT_ENROLLED
    record["source_record_id"] = f"{stranger}:vitals:fault-{len(lines) + 1}"
    lines.append(
        r.line(r.at(m), record, expect="refused", expect_error="patient",
               planted="a patient who was never enrolled")
    )  # fmt: skip
    r, m = pick()
    original = next(
        line
        for line in r.lines
        if line.kind == "vitals" and line.at >= r.at(m - 4 * 60)
    )
    lines.append(
        FeedLine(
            at=original.at + timedelta(minutes=10),
            text=original.text,
            patient=original.patient,
            kind=original.kind,
            source_record_id=original.source_record_id,
            expect="duplicate",
            planted="the same vitals set sent again (stored once)",
        )
    )
    return lines


def build_feed(
    now: datetime,
    *,
    patients: int = 20,
    days: int = 14,
    seed: int = 7,
    design: CohortDesign | None = None,
    planted: bool = True,
) -> SyntheticFeed:
    """The demo's synthetic feed that ends at ``now`` (tz-aware), for ``seed``.

    Every patient was infused ``days`` days (and up to 4 h) before ``now``.
    ``design`` defaults to :data:`DEMO_DESIGN` (exact grade counts), and
    ``planted`` adds the deliberately faulty lines. The same arguments give the
    same lines, byte for byte.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now: must be tz-aware")
    if days < 2:
        raise ValueError("days: at least 2")
    design = design or DEMO_DESIGN
    end = now.astimezone(UTC).replace(second=0, microsecond=0)
    offsets = random.Random(f"crsmon.synth:{seed}:offsets")  # noqa: S311
    cohort = draw_cohort(patients, seed, design)
    lines: list[tuple[datetime, int, str, FeedLine]] = []
    built = []
    renderers = []
    for b in cohort:
        offset = offsets.randrange(0, design.vitals_every_h * 60, 5)
        horizon = days * 24 * 60 + offset
        course = simulate(b, seed, horizon, design)
        patient = SyntheticPatient(b, course, end - timedelta(minutes=horizon))
        built.append(patient)
        r = Renderer(patient)
        renderers.append(r)
        lines += [(line.at, 0, b.pseudonym, line) for line in r.lines]
    if planted:
        faults = random.Random(f"crsmon.synth:{seed}:faults")  # noqa: S311
        faulty = planted_lines(renderers, faults, days * 24 * 60)
        lines += [(line.at, 1, line.patient, line) for line in faulty]
    lines.sort(key=lambda item: item[:3])
    return SyntheticFeed(
        now=now,
        seed=seed,
        days=days,
        patients=tuple(built),
        lines=tuple(item[3] for item in lines),
    )
