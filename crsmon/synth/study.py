"""A synthetic study: the cohort of ``crsmon synth`` with accrual, follow-up and truth.

Patients are infused uniformly over 24 months of accrual; the data cut falls
30 months after accrual opened, so each patient has 6 to 30 months of
follow-up (risk.md §3.6). Each patient's course is charted for ``days`` days
(28 by default) and the outcomes (response, relapse, HSCT, death, last
follow-up) up to the data cut. The data cut is a fixed date, never the clock,
so the same seed gives byte-identical files.

Three products, each pure:

- :meth:`Study.lines`: the feed, in time order, streamed (a 20,000-patient
  feed never sits in memory at once: a patient's lines are rendered when the
  stream reaches the patient's infusion);
- :meth:`Study.truth`: the hidden truth, one JSON object per patient, for
  evaluation code only (nothing in crsmon reads it back);
- :func:`manifest` and :func:`readme_text`: what was generated, labelled
  SYNTHETIC DATA.

:meth:`Study.summaries` is the fast path for validation: baseline, hidden
course and outcomes, without charting or rendering anything.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from crsmon.synth.cohort import Baseline, CohortDesign, draw_cohort, patient_rng
from crsmon.synth.course import (
    Plan,
    hidden_course,
    hidden_grades,
    simulate,
)
from crsmon.synth.feed import (
    SOURCE_SYSTEM,
    FeedLine,
    Renderer,
    SyntheticPatient,
    planted_lines,
)
from crsmon.synth.outcomes import Outcomes

GENERATOR_VERSION = "2.0.0"
"""Bumped whenever the same seed would give other files."""
LABEL = "SYNTHETIC DATA"
DEFAULT_DATA_CUT = datetime(2025, 6, 30, tzinfo=UTC)
"""A fixed date in the past, so the default output never depends on the clock."""
DAYS_PER_MONTH = 365.25 / 12
ACCRUAL_MONTHS = 24
DATA_CUT_MONTHS = 30
"""Months from the opening of accrual to the data cut."""
PLANTED_AMONG = 20
"""Planted faults (if asked for) go to the first patients infused."""
_MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True, slots=True)
class StudySpec:
    """What to generate. The defaults are ``crsmon synth``'s."""

    patients: int
    seed: int
    days: int = 28
    data_cut: datetime = DEFAULT_DATA_CUT
    design: CohortDesign = field(default_factory=CohortDesign)
    planted: bool = False
    """Add the demo's deliberately faulty lines (off for a study)."""

    def __post_init__(self) -> None:
        if self.patients < 1:
            raise ValueError("patients: at least one")
        if self.days < 2:
            raise ValueError("days: at least 2")
        if self.data_cut.tzinfo is None or self.data_cut.utcoffset() is None:
            raise ValueError("data_cut: must be tz-aware")

    @property
    def cut(self) -> datetime:
        """The data cut in UTC, on a whole minute."""
        return self.data_cut.astimezone(UTC).replace(second=0, microsecond=0)

    @property
    def accrual_opens(self) -> datetime:
        """The first possible infusion (30 months before the data cut)."""
        return self.cut - timedelta(
            minutes=round(DATA_CUT_MONTHS * DAYS_PER_MONTH * _MINUTES_PER_DAY)
        )

    def infusion_at(self, index: int) -> datetime:
        """Patient ``index``'s infusion: uniform over the 24 months of accrual."""
        rng = patient_rng(self.seed, index, "accrual")
        span = ACCRUAL_MONTHS * DAYS_PER_MONTH * _MINUTES_PER_DAY
        return self.accrual_opens + timedelta(minutes=round(rng.uniform(0, span)))


@dataclass(frozen=True, slots=True)
class PatientSummary:
    """One patient without the charted records (the validation fast path)."""

    baseline: Baseline
    plan: Plan
    outcomes: Outcomes
    infusion_at: datetime
    follow_days: float

    @property
    def observed(self) -> dict[str, Any]:
        """The outcomes as known at the data cut."""
        return self.outcomes.at_follow_up(self.follow_days)


class Study:
    """The synthetic study of ``spec`` (deterministic)."""

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec
        self.cohort = draw_cohort(spec.patients, spec.seed, spec.design)
        self._truth: dict[int, dict[str, Any]] = {}
        self._done = False

    def _follow_min(self, infusion_at: datetime) -> int:
        return int((self.spec.cut - infusion_at) // timedelta(minutes=1))

    def summaries(self) -> list[PatientSummary]:
        """Every patient's baseline, hidden course and outcomes (no records)."""
        spec = self.spec
        result = []
        for b in self.cohort:
            infusion = spec.infusion_at(b.index)
            follow = self._follow_min(infusion)
            horizon = min(spec.days * _MINUTES_PER_DAY, follow)
            plan, outcomes = hidden_course(b, spec.seed, spec.design, horizon)
            result.append(
                PatientSummary(b, plan, outcomes, infusion, follow / _MINUTES_PER_DAY)
            )
        return result

    def patient(self, b: Baseline) -> SyntheticPatient:
        """Patient ``b`` charted: ``days`` days of records, outcomes to the cut."""
        spec = self.spec
        infusion = spec.infusion_at(b.index)
        follow = self._follow_min(infusion)
        course = simulate(
            b,
            spec.seed,
            min(spec.days * _MINUTES_PER_DAY, follow),
            spec.design,
            follow_min=follow,
            last_follow_up=True,
        )
        return SyntheticPatient(b, course, infusion)

    def lines(self) -> Iterator[FeedLine]:
        """The feed in time order (ties: by patient, then as charted).

        Fills :meth:`truth` on the way, patient by patient.
        """
        spec = self.spec
        order = sorted(self.cohort, key=lambda b: (spec.infusion_at(b.index), b.index))
        heap: list[tuple[datetime, int, int, int, FeedLine]] = []

        def push(b: Baseline) -> Renderer:
            patient = self.patient(b)
            self._truth[b.index] = truth_record(patient, spec)
            renderer = Renderer(patient)
            for seq, line in enumerate(renderer.lines):
                heapq.heappush(heap, (line.at, 0, b.index, seq, line))
            return renderer

        first = [push(b) for b in order[:PLANTED_AMONG]]
        if spec.planted:
            rng = random.Random(f"crsmon.synth:{spec.seed}:faults")  # noqa: S311
            horizon = spec.days * _MINUTES_PER_DAY
            index = {r.patient.pseudonym: r.patient.baseline.index for r in first}
            for seq, line in enumerate(planted_lines(first, rng, horizon)):
                who = index.get(line.patient, -1)  # -1: the patient never enrolled
                heapq.heappush(heap, (line.at, 1, who, seq, line))
        for b in order[PLANTED_AMONG:]:
            opens = spec.infusion_at(b.index)
            while heap and heap[0][0] < opens:
                yield heapq.heappop(heap)[-1]
            push(b)
        while heap:
            yield heapq.heappop(heap)[-1]
        self._done = True

    def truth(self) -> list[dict[str, Any]]:
        """The truth file's header and one record per patient, by pseudonym.

        Raises:
            RuntimeError: :meth:`lines` has not been read to the end.
        """
        if not self._done:
            raise RuntimeError("read Study.lines() to the end first")
        return [truth_header(self.spec)] + [self._truth[i] for i in sorted(self._truth)]


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def truth_header(spec: StudySpec) -> dict[str, Any]:
    """The first line of the truth file."""
    return {
        "label": LABEL,
        "file": "truth",
        "note": (
            "Hidden ground truth of a crsmon synth cohort: for evaluation code "
            "only, never an input to crsmon or to a model."
        ),
        "generator": "crsmon.synth",
        "generator_version": GENERATOR_VERSION,
        "seed": spec.seed,
        "patients": spec.patients,
        "days": spec.days,
        "data_cut": spec.cut.isoformat(),
    }


def truth_record(patient: SyntheticPatient, spec: StudySpec) -> dict[str, Any]:
    """One patient's truth: latent values, grades, course, outcomes."""
    b, course = patient.baseline, patient.course
    lat = b.latent
    follow_days = (spec.cut - patient.infusion_at) / timedelta(days=1)
    segments: list[list[Any]] = []
    for minute, grade in hidden_grades(course, spec.design.vitals_every_h):
        if not segments or segments[-1][1] != grade:
            segments.append([round(minute / 60, 4), grade])
    plan = course.plan
    return {
        "pseudonym": b.pseudonym,
        "synthetic": True,
        "infusion_at": patient.infusion_at.isoformat(),
        "follow_up_days": _r(follow_days),
        "baseline": b.covariates(),
        "latent": None
        if lat is None
        else {
            "load_pct": lat.load_pct,
            "z_load": _r(lat.z_load),
            "z_viab": _r(lat.z_viab),
            "z_endo": _r(lat.z_endo),
            "u": _r(lat.u),
            "E": _r(lat.expansion),
            "epsilon": _r(lat.epsilon),
            "S": _r(lat.severity),
        },
        "p_true_base": None if lat is None else _r(lat.p_true_base),
        "potential_max_grade": b.potential_grade,
        "observed_max_grade": plan.max_grade,
        "charted_max_grade": course.max_grade,
        "organ": b.organ,
        "crs": {
            **plan.as_truth(),
            "graded_onset_h": _hours(course.onset_min),
            "charted_peak_h": _hours(course.peak_min),
        },
        "hidden_grade_segments": segments,
        "outcomes": {
            **{
                k: _r(v) if isinstance(v, float) else v
                for k, v in course.outcomes.at_follow_up(follow_days).items()
            },
            "frailty_v": _r(course.outcomes.frailty_v),
            "p_nonresponse": _r(course.outcomes.p_nonresponse),
        },
    }


def _hours(minutes: int | None) -> float | None:
    return None if minutes is None else round(minutes / 60, 4)


def manifest(spec: StudySpec, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What was generated and how (``files``: name -> lines and sha256)."""
    return {
        "label": LABEL,
        "generator": "crsmon.synth",
        "generator_version": GENERATOR_VERSION,
        "source_system": SOURCE_SYSTEM,
        "seed": spec.seed,
        "patients": spec.patients,
        "days": spec.days,
        "data_cut": spec.cut.isoformat(),
        "accrual": {
            "opens": spec.accrual_opens.isoformat(),
            "months": ACCRUAL_MONTHS,
        },
        "planted_faults": spec.planted,
        "design": asdict(spec.design),
        "files": files,
        "spec": "risk.md §3 (synthetic cohort generator)",
    }


def readme_text(spec: StudySpec) -> str:
    """README.txt of a generated study directory."""
    return f"""{LABEL} - generated by crsmon synth {GENERATOR_VERSION}. No real patient.

Seed:      {spec.seed}
Patients:  {spec.patients} (SYN-0001 on), each with {spec.days} days of bedside records
Accrual:   uniform over {ACCRUAL_MONTHS} months from {spec.accrual_opens.isoformat()}
Data cut:  {spec.cut.isoformat()} (outcomes are charted up to it)

feed.ndjson    the feed, one record per line (docs/feed-format.md), sender
               {SOURCE_SYSTEM}; `crsmon ingest feed.ndjson` takes it in.
               Planted faulty records: {"yes" if spec.planted else "none"}.
truth.jsonl    the hidden ground truth: a header line, then one line per patient
               (latent values, potential and observed maximum grade, true
               baseline risk, course, outcomes). For evaluation code only:
               never an input to crsmon or to a model.
manifest.json  the parameters, the generator version and each file's sha256.

The same seed, size, days and data cut give byte-identical files.
Design: risk.md §3; docs/synthetic-cohort.md. Research software, not a
medical device.
"""


def dumps(record: dict[str, Any]) -> str:
    """One JSON line, as the files are written (stable key order)."""
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": "))
