"""The stored JSON form of a snapshot (and so its hash) is the ``asdict`` form.

Grade rows keep the hash of the snapshot they came from, and a run writes a
row only where the hash (or the grade) changed: if the conversion's output ever
drifted, every stored moment would be re-derived as new rows. The fast
conversion in :mod:`crsmon.services.grading` is checked against the
``dataclasses.asdict`` form it replaced, over the whole assessment space.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_grading_properties import assessments

from crsmon.db.repository import content_hash
from crsmon.domain.snapshot import Assessment
from crsmon.domain.state import Snapshot
from crsmon.services.grading import snapshot_json


def reference_plain(value: Any) -> Any:
    """The conversion applied to ``asdict`` output before this change."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: reference_plain(v) for k, v in value.items()}
    if isinstance(value, frozenset):
        return sorted(reference_plain(v) for v in value)
    if isinstance(value, list | tuple):
        return [reference_plain(v) for v in value]
    return value


def reference_json(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "at": snapshot.at.isoformat(),
        "assessment": reference_plain(asdict(snapshot.assessment)),
        "sources": dict(snapshot.sources),
    }


SOURCES = st.lists(
    st.tuples(st.sampled_from(["temperature_c", "sbp_mmhg", "oxygen"]), st.text()),
    max_size=3,
).map(tuple)


@settings(max_examples=300)
@given(assessment=assessments(), minutes=st.integers(0, 60 * 24 * 60), sources=SOURCES)
def test_the_stored_form_and_hash_equal_the_asdict_form(
    assessment: Assessment, minutes: int, sources: tuple[tuple[str, str], ...]
) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    snapshot = Snapshot(at, assessment, sources)
    assert snapshot_json(snapshot) == reference_json(snapshot)
    assert content_hash(snapshot_json(snapshot)) == content_hash(
        reference_json(snapshot)
    )


def test_a_value_with_no_json_form_is_refused() -> None:
    odd = Snapshot(
        datetime(2026, 1, 1, tzinfo=UTC),
        Assessment(age_years=9.0, organ_toxicity_ctcae=((object(), 1),)),  # type: ignore[arg-type]
        (),
    )
    with pytest.raises(TypeError, match="no JSON form for object"):
        snapshot_json(odd)
