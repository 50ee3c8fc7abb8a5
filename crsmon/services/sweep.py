"""One sweep on the embedded default (no broker): what beat does for the workers.

``crsmon sweep`` runs it once, or every N seconds: grade patients whose records
still wait (a crash between commit and grading), grade quiet patients as of now
(their open stale-monitoring gap is due an alert), and send the webhook pushes
that are due (first tries and retries on their backoff schedule).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from crsmon.services.dispatch import InProcessDispatcher
from crsmon.services.monitoring import patients_gone_quiet, patients_pending_since
from crsmon.services.webhooks import DeliveryReport, deliver_due

logger = logging.getLogger(__name__)

SWEEP_BATCH_PATIENTS = 500


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did."""

    waiting_patients: int
    quiet_patients: int
    failed_patients: int
    alerts_raised: int
    deliveries: DeliveryReport


def sweep_in_process(
    dispatcher: InProcessDispatcher, *, now: datetime, pending_after_s: float
) -> SweepReport:
    """Grade waiting and quiet patients as of ``now``, then send due pushes."""
    sessions = dispatcher.sessions
    waiting = patients_pending_since(
        sessions,
        older_than=now - timedelta(seconds=pending_after_s),
        limit=SWEEP_BATCH_PATIENTS,
    )
    with sessions() as session:
        quiet = patients_gone_quiet(
            session, now=now, policy=dispatcher.policy, limit=SWEEP_BATCH_PATIENTS
        )
    dispatcher.runs.clear()
    failed = 0
    for patient_id in dict.fromkeys([*waiting, *quiet]):
        try:
            dispatcher.notify([patient_id])
        except Exception as exc:  # one patient's failure must not stop the sweep
            failed += 1
            logger.warning(
                "sweep: grading patient %d failed (%s)", patient_id, type(exc).__name__
            )
    raised = sum(len(run.alerts_raised) for run in dispatcher.runs)
    deliveries = DeliveryReport()
    if dispatcher.webhooks is not None:
        deliveries = deliver_due(sessions, dispatcher.webhooks, clock=dispatcher.clock)
    return SweepReport(len(waiting), len(quiet), failed, raised, deliveries)
