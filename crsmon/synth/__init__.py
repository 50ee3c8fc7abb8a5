"""Synthetic CAR T cohorts: seeded, pure, and labelled synthetic throughout.

The one generator of synthetic patients (risk.md §3, docs/synthetic-cohort.md).
It builds both the demo feed and the study of ``crsmon synth``::

    from crsmon.synth import build_feed, Study, StudySpec

    feed = build_feed(now, patients=20, days=14, seed=7)   # the demo
    feed.lines            # FeedLine(at, text, ...) in time order, every at <= now
    feed.ndjson()         # the feed file `crsmon ingest` reads
    feed.patients[0].course.max_grade   # the truth the feed was built from

    study = Study(StudySpec(patients=343, seed=1))          # crsmon synth
    for line in study.lines(): ...      # the feed, streamed in time order
    study.truth()                       # hidden truth, one dict per patient
    study.summaries()                   # fast path: no records charted

Layers, each pure (a seed in, values out; no clock, no I/O):

- :mod:`crsmon.synth.latent`: the §3.3 latent model and the true baseline risk;
- :mod:`crsmon.synth.cohort`: who the patients are (§3.2 baseline, latent
  values, potential grade by the latent score or by quota);
- :mod:`crsmon.synth.course`: the hidden course (§3.4–3.5) and its records, in
  minutes since infusion;
- :mod:`crsmon.synth.outcomes`: response, relapse, HSCT and death (§3.6);
- :mod:`crsmon.synth.feed`: the records as feed lines at wall-clock times (the
  demo: ending at ``now``, with a few deliberately faulty lines);
- :mod:`crsmon.synth.study`: accrual, a fixed data cut, the truth file and the
  manifest (``crsmon synth``).
"""

from __future__ import annotations

from crsmon.synth.cohort import (
    DEMO_DESIGN,
    Baseline,
    CohortDesign,
    Latent,
    draw_cohort,
    pseudonym,
)
from crsmon.synth.course import (
    SYNTHETIC,
    Course,
    Event,
    Plan,
    hidden_course,
    hidden_grades,
    plan_course,
    simulate,
)
from crsmon.synth.feed import (
    SOURCE_SYSTEM,
    FeedLine,
    SyntheticFeed,
    SyntheticPatient,
    build_feed,
)
from crsmon.synth.outcomes import Outcomes, draw_outcomes
from crsmon.synth.study import (
    DEFAULT_DATA_CUT,
    GENERATOR_VERSION,
    PatientSummary,
    Study,
    StudySpec,
)

__all__ = [
    "DEFAULT_DATA_CUT",
    "DEMO_DESIGN",
    "GENERATOR_VERSION",
    "SOURCE_SYSTEM",
    "SYNTHETIC",
    "Baseline",
    "CohortDesign",
    "Course",
    "Event",
    "FeedLine",
    "Latent",
    "Outcomes",
    "PatientSummary",
    "Plan",
    "Study",
    "StudySpec",
    "SyntheticFeed",
    "SyntheticPatient",
    "build_feed",
    "draw_cohort",
    "draw_outcomes",
    "hidden_course",
    "hidden_grades",
    "plan_course",
    "pseudonym",
    "simulate",
]
