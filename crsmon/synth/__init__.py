"""Synthetic CAR T cohorts: seeded, pure, and labelled synthetic throughout.

The one generator of synthetic patients (risk.md §3). This first version
builds the demo feed; the risk-model issue grows it (latent severity, 28 days,
a truth file, outcomes) behind the same API::

    from crsmon.synth import build_feed

    feed = build_feed(now, patients=20, days=14, seed=7)
    feed.lines            # FeedLine(at, text, ...) in time order, every at <= now
    feed.ndjson()         # the feed file `crsmon ingest` reads
    feed.patients[0].course.max_grade   # the truth the feed was built from

Layers, each pure (a seed and ``now`` in, values out; no clock, no I/O):

- :mod:`crsmon.synth.cohort`: who the patients are (baseline, potential grade);
- :mod:`crsmon.synth.course`: what happens to them, in minutes since infusion;
- :mod:`crsmon.synth.feed`: the course as feed records at wall-clock times,
  with a few deliberately faulty lines.
"""

from __future__ import annotations

from crsmon.synth.cohort import Baseline, CohortDesign, draw_cohort, pseudonym
from crsmon.synth.course import SYNTHETIC, Course, Event, simulate
from crsmon.synth.feed import (
    SOURCE_SYSTEM,
    FeedLine,
    SyntheticFeed,
    SyntheticPatient,
    build_feed,
)

__all__ = [
    "SOURCE_SYSTEM",
    "SYNTHETIC",
    "Baseline",
    "CohortDesign",
    "Course",
    "Event",
    "FeedLine",
    "SyntheticFeed",
    "SyntheticPatient",
    "build_feed",
    "draw_cohort",
    "pseudonym",
    "simulate",
]
