"""From a feed file to what the risk models learn from: no database in between.

A feed (the NDJSON the bedside sends, or ``crsmon synth`` writes) is read with
the intake's own schemas and mapped onto the domain timeline by the
repository's own mapping (:func:`crsmon.db.repository.timeline_from`, on
transient rows), so training sees exactly what the service sees. Each patient
is graded with the live rule set at every record time, as the service does;
the outcome is the first time crsmon's ASTCT grade reached 3 or more.

The truth file of a synthetic cohort is never read here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from crsmon.db.models import ClinicalRecord, Patient
from crsmon.db.repository import timeline_from
from crsmon.domain.episodes import grade_episode
from crsmon.domain.features import (
    MAX_DYNAMIC_GRADE,
    FeatureRow,
    PatientBaseline,
    baseline_features,
    dynamic_features,
)
from crsmon.domain.records import PatientTimeline
from crsmon.domain.rules import RuleSet
from crsmon.domain.state import StateSettings, episode_until
from crsmon.intake.parse import Refused, parse_record
from crsmon.intake.rows import PatientRow, RecordRow
from crsmon.intake.schemas import PatientIn
from crsmon.risk.scoring import baseline_of

SEVERE = 3
_HOUR = timedelta(hours=1)


@dataclass
class CollectedPatient:
    patient: PatientRow
    system: str
    rows: list[tuple[str, RecordRow]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PatientData:
    """One patient as the models see them: inputs and crsmon's own grades."""

    pseudonym: str
    baseline: PatientBaseline
    timeline: PatientTimeline
    grades: tuple[tuple[float, int], ...]
    """(hours since infusion, grade) at every graded moment, in time order."""

    @property
    def first_severe_h(self) -> float | None:
        """When the grade first reached 3 or more (None: never, in the feed)."""
        return next((t for t, g in self.grades if g >= SEVERE), None)

    def grade_at(self, hours: float) -> int:
        """The grade of the latest moment at or before ``hours`` (0 before any)."""
        found = [g for t, g in self.grades if t <= hours]
        return found[-1] if found else 0

    def baseline_row(self) -> FeatureRow:
        """The baseline features at infusion."""
        return baseline_features(self.baseline, self.timeline)

    def dynamic_row(self, hours: float) -> FeatureRow:
        """The dynamic features ``hours`` after infusion (grade below 3)."""
        at = self.timeline.infusion_at + hours * _HOUR
        grade = min(self.grade_at(hours), MAX_DYNAMIC_GRADE)
        return dynamic_features(self.baseline, self.timeline, at, grade)


def _current(rows: list[tuple[str, RecordRow]]) -> list[tuple[str, RecordRow]]:
    """The rows as they stand, by the repository's rules (``current_records``):
    a retraction removes its target; a correction replaces what it supersedes."""
    retracted = {
        (system, row.details["target_record_id"])
        for system, row in rows
        if row.kind == "retraction"
    }
    superseded = set()
    for system, row in rows:
        if row.supersedes is not None:
            suffix = "" if row.key_suffix is None else f"#{row.key_suffix}"
            superseded.add((system, f"{row.supersedes}{suffix}"))
    return [
        (system, row)
        for system, row in rows
        if row.kind != "retraction"
        and (system, row.key) not in superseded
        and (system, row.source_record_id) not in retracted
    ]


def timeline_of(collected: CollectedPatient) -> PatientTimeline:
    """The domain timeline of rows that were never stored (ids by position),
    mapped by the repository's own :func:`timeline_from`."""
    patient = collected.patient
    enrolled = Patient(
        pseudonym=patient.pseudonym,
        birth_date=patient.birth_date,
        age_years_at_infusion=patient.age_years_at_infusion,
        weight_kg=patient.weight_kg,
        infusion_at=patient.infusion_at,
    )
    records = [
        ClinicalRecord(
            id=n,
            kind=row.kind,
            source_system=system,
            source_record_id=row.key,
            occurred_at=row.occurred_at,
            quantity=row.quantity,
            value=row.value,
            unit=row.unit,
            details=row.details,
        )
        for n, (system, row) in enumerate(_current(collected.rows), start=1)
    ]
    records.sort(key=lambda r: (r.occurred_at, r.id))
    return timeline_from(enrolled, records)


def read_feed(
    lines: Iterable[str], *, now: datetime
) -> tuple[dict[str, CollectedPatient], list[tuple[int, str]]]:
    """Enrolments and records by patient; refused lines with their numbers.

    Corrections and retractions apply as in the repository (see
    :func:`timeline_of`).
    """
    patients: dict[str, CollectedPatient] = {}
    refused: list[tuple[int, str]] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        record = parse_record(text, now)
        if isinstance(record, Refused):
            refused.append((number, record.error))
        elif isinstance(record, PatientIn):
            patients[record.patient] = CollectedPatient(
                record.patient_row(), record.source_system
            )
        elif record.patient not in patients:
            refused.append((number, "patient: not enrolled earlier in the feed"))
        else:
            collected = patients[record.patient]
            collected.rows.extend((record.source_system, r) for r in record.rows())
    return patients, refused


def patient_data(
    collected: CollectedPatient, rules: RuleSet, *, until: datetime
) -> PatientData:
    """Timeline, baseline and crsmon's grades of one patient up to ``until``."""
    timeline = timeline_of(collected)
    episode, _ = episode_until(timeline, until, StateSettings())
    result = grade_episode(episode, rules)
    grades = tuple((o.t_hours, o.result.grade) for o in result.observations)
    return PatientData(
        collected.patient.pseudonym,
        baseline_of(collected.patient, timeline),
        timeline,
        grades,
    )


def load_patients(
    lines: Iterable[str], rules: RuleSet, *, now: datetime
) -> Iterator[PatientData]:
    """Every patient of a feed, graded as the service would (feed order)."""
    patients, _ = read_feed(lines, now=now)
    for collected in patients.values():
        yield patient_data(collected, rules, until=now)
