"""CDS Hooks cards from open alerts (peers.md §1.3, §2.5).

One card per open alert of the patient the EHR is showing: the summary (at
most 140 characters, as the specification requires), the indicator by grade
(1 info, 2 warning, 3 or more critical, for alerts about the grade; data
quality, monitoring and risk alerts keep their own severity), the source
"crsmon ASTCT 2019", the alert's reasons and an as-of time in the detail
(cds-hooks #20, #624), and a link to the patient's timeline. A card's uuid
carries its alert's id, so the EHR's feedback on the card finds the alert it
acknowledges.

Pure: functions of their arguments.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

SERVICE_ID = "crsmon-crs"
SOURCE_LABEL = "crsmon ASTCT 2019"
SUMMARY_MAX = 140
_CARD_PREFIX = "00000000-0000-4000-8000-"
_CARD = re.compile(r"^00000000-0000-4000-8000-([0-9a-f]{12})$")


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """What a card shows of one open alert."""

    alert_id: int
    kind: str
    severity: str
    grade: int | None
    rule_set: str
    reasons: tuple[str, ...]
    triggered_at: datetime


def discovery() -> dict[str, Any]:
    """The ``/cds-services`` document: one patient-view service."""
    return {
        "services": [
            {
                "hook": "patient-view",
                "id": SERVICE_ID,
                "title": "crsmon: cytokine release syndrome alerts",
                "description": "One card per open CRS alert of the patient "
                "(ASTCT 2019 grading with its reasons). Research software for "
                "monitoring, not a medical device.",
                "usageRequirements": "A crsmon reviewer key as the bearer "
                "token; the EHR's Patient id linked to a crsmon patient.",
            }
        ]
    }


GRADE_KINDS = frozenset({"crs_onset", "crs_escalation", "severe_crs", "crs_death"})
"""Alerts about the CRS grade itself: their card's indicator follows the grade.
Other alerts (data quality, monitoring, risk) keep their own severity, whatever
the grade was when they were raised."""


def indicator(kind: str, grade: int | None, severity: str) -> str:
    """info, warning or critical: by grade for a grade alert (1 info, 2 warning,
    3 or more critical, peers.md §2.5), else the alert's own severity."""
    if kind in GRADE_KINDS and grade is not None and grade >= 1:
        return {1: "info", 2: "warning"}.get(grade, "critical")
    return severity if severity in ("info", "warning", "critical") else "info"


def card_uuid(alert_id: int) -> str:
    """The card's uuid, carrying the alert id (for feedback)."""
    return f"{_CARD_PREFIX}{alert_id:012x}"


def alert_of_card(card: str) -> int | None:
    """The alert id a card uuid carries, or None for a card not of crsmon."""
    match = _CARD.match(card.lower())
    if match is None:
        return None
    found = int(match.group(1), 16)
    return found if found > 0 else None


def _summary(alert: OpenAlert) -> str:
    what = alert.kind.replace("_", " ")
    when = alert.triggered_at.strftime("%Y-%m-%d %H:%M UTC")
    if alert.kind in GRADE_KINDS and alert.grade is not None:
        text = f"CRS grade {alert.grade}: {what} since {when}"
    else:
        text = f"CRS monitoring: {what} since {when}"
    return text[:SUMMARY_MAX]


def card(
    alert: OpenAlert, *, patient: str, timeline_url: str, as_of: datetime
) -> dict[str, Any]:
    """One CDS Hooks card for one open alert."""
    reasons = "\n".join(f"- {r}" for r in alert.reasons) or "- (no reasons recorded)"
    detail = (
        f"**Why** ({alert.rule_set}):\n\n{reasons}\n\n"
        f"Alert {alert.alert_id} for {patient}, open since "
        f"{alert.triggered_at.isoformat()}; as of {as_of.isoformat()}. "
        "crsmon is research software, not a medical device: confirm at the bedside."
    )
    return {
        "uuid": card_uuid(alert.alert_id),
        "summary": _summary(alert),
        "indicator": indicator(alert.kind, alert.grade, alert.severity),
        "detail": detail,
        "source": {"label": SOURCE_LABEL},
        "links": [
            {"label": "CRS timeline in crsmon", "url": timeline_url, "type": "absolute"}
        ],
    }


def new_uuid() -> str:
    """A random uuid (for responses that need one)."""
    return str(uuid.uuid4())
