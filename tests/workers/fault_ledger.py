"""The ledger, load generators, oracle and checker of the fault-injection tests.

reliability.md §4.4 (Jepsen-style): the load generator writes down every
submission (natural key, payload hash, HTTP status or in-process outcome,
returned ids, time and latency) in a :class:`Ledger`. After the run has
drained, :func:`check` compares the ledger and the database with a serial
oracle and asserts:

- every record sent was accepted (2xx, or stored/duplicate in process), every
  acceptance of one key returned the same ids, and at most one said "stored";
- every accepted record is stored exactly once, under its natural key, with
  the content that was sent (0 lost, no stray rows), every enrolment once;
- every stored record is graded: none pending, none failed unless injected;
- no duplicate effects: no grade derivation written twice at one time, no
  alert twice (:func:`worker_harness.assert_no_duplicates`);
- grades and alerts equal the serial oracle: the same feed stored and graded
  once in process on a fresh SQLite file (:func:`serial_oracle`).

Effects are compared by natural key, never by row id: a snapshot names the
record behind each value by its row id, and ids depend on the order records
were committed (and on PostgreSQL sequence gaps), so :func:`read_effects`
replaces each id with the record's ``source_system/source_record_id`` before
hashing. It prints what §4.4 asks to report: executions against grades, the
longest time from acceptance to grade, and intake latency p50/p99/max.

Feeds (:func:`course_feed`) are whole CRS courses compressed into
:data:`SPAN_H` hours that end shortly before now: every gap between vital
signs, and between the last one and any grading time during a run, stays
below the 8 h stale-monitoring threshold, so a patient graded on a prefix of
the feed raises no alert that the whole feed would not. Within a patient the
records carry distinct times, so a grading run on a prefix (records sent in
clinical order) writes exactly the grade rows the whole feed would.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from api_feed import role_keys
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from worker_harness import (
    AlertKey,
    Effects,
    GradeKey,
    Proc,
    assert_no_duplicates,
    ingest_all,
)

from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade
from crsmon.db.models import Alert, ClinicalRecord, Grade, Patient
from crsmon.db.repository import content_hash
from crsmon.domain.catalog import resolve_rule_set
from crsmon.intake.parse import Refused, parse_record
from crsmon.services.dispatch import InProcessDispatcher
from crsmon.services.ingest import ingest_text
from crsmon.services.monitoring import AlertPolicy
from crsmon.settings import Settings


def api_headers(database_url: str) -> dict[str, str]:
    """The headers every request of the fault tests sends: a bedside key."""
    key = role_keys(database_url, Settings().pepper())["bedside"]
    return {"authorization": f"Bearer {key}"}


# ---------------------------------------------------------------- feeds

SPAN_H = 6.0
"""Clinical hours a course spans, ending about 15 minutes before the run:
below the 8 h stale-monitoring threshold (see the module docstring)."""
ENROLMENT_SYSTEM = "ehr"
MONITOR_SYSTEM = "monitor"


def course_start(now: datetime | None = None) -> datetime:
    """The infusion time of a course that ends shortly before ``now``."""
    now = now or datetime.now(UTC)
    return (now - timedelta(hours=SPAN_H)).replace(microsecond=0)


def course_feed(
    pseudonym: str, records: int, infusion_at: datetime, variant: int
) -> list[str]:
    """One patient's feed, enrolment first, then ``records - 1`` clinical records
    in clinical order, each at its own time.

    Fever, then hypotension with a fluid bolus, tocilizumab; ``variant`` adds a
    vasopressor (even: severe CRS) and nasal-cannula oxygen (multiple of 3).
    """
    if records < 7:
        raise ValueError("a course needs at least 7 records")

    def at(hours: float) -> str:
        return (infusion_at + timedelta(hours=hours)).isoformat()

    lines = [
        json.dumps(
            {
                "kind": "patient",
                "source_system": ENROLMENT_SYSTEM,
                "source_record_id": f"{pseudonym}-enrol",
                "patient": pseudonym,
                "age_years": 9.0,
                "care_unit": "PICU",
                "infusion_at": at(0),
            }
        )
    ]
    m = records - 1
    slots: dict[int, str] = {}

    def place(fraction: float, kind: str) -> None:
        i = min(int(m * fraction), m - 1)
        while i in slots:
            i = (i + 1) % m
        slots[i] = kind

    place(0.35, "fluid_bolus")
    if variant % 3 == 0:
        place(0.45, "oxygen")
    if variant % 2 == 0:
        place(0.55, "vasopressor_start")
    place(0.7, "treatment")
    step = (SPAN_H - 0.5) / m
    for i in range(m):
        h = round(0.25 + i * step, 4)
        kind = slots.get(i, "vitals")
        record: dict[str, Any]
        if kind == "fluid_bolus":
            record = {"given_at": at(h), "for_hypotension": True, "volume_ml": 400}
        elif kind == "oxygen":
            record = {
                "observed_at": at(h),
                "device": "nasal_cannula",
                "flow_l_min": 2.0,
            }
        elif kind == "vasopressor_start":
            record = {
                "started_at": at(h),
                "drug": "norepinephrine",
                "dose": 0.05,
                "unit": "ug/kg/min",
            }
        elif kind == "treatment":
            record = {"given_at": at(h), "drug": "tocilizumab"}
        else:
            phase = i / m
            fever = 0.15 <= phase < 0.75
            hypotension = 0.3 <= phase < 0.8
            record = {
                "observed_at": at(h),
                "temperature_c": round(
                    38.6 + (i % 4) / 10 if fever else 36.8 + (i % 3) / 10, 1
                ),
                "sbp_mmhg": 82 + i % 3 if hypotension else 104 + i % 5,
                "dbp_mmhg": 40 if hypotension else 60,
            }
        key = {
            "source_system": MONITOR_SYSTEM,
            "source_record_id": f"{pseudonym}-{i + 1}",
            "patient": pseudonym,
        }
        lines.append(json.dumps({"kind": kind, **key, **record}))
    return lines


def course_feeds(
    prefix: str, patients: int, records: int, infusion_at: datetime
) -> dict[str, list[str]]:
    """``patients`` feeds of ``records`` records each, by pseudonym."""
    return {
        f"{prefix}-P{k:03d}": course_feed(f"{prefix}-P{k:03d}", records, infusion_at, k)
        for k in range(patients)
    }


def shuffled_course(lines: Sequence[str], rng: random.Random) -> list[str]:
    """Enrolment first, then the clinical records in random order."""
    rest = list(lines[1:])
    rng.shuffle(rest)
    return [lines[0], *rest]


# ---------------------------------------------------------------- ledger

ACCEPTED = frozenset({"200", "201", "stored", "duplicate"})
STORED = frozenset({"201", "stored"})
Key = tuple[str, str]


def key_of(text: str) -> tuple[Key, str]:
    """The natural key and the patient pseudonym of a feed line."""
    data = json.loads(text)
    return (data["source_system"], data["source_record_id"]), data["patient"]


@dataclass(frozen=True, slots=True)
class Submission:
    """One try at sending one record, as the sender saw it."""

    key: Key
    patient: str
    payload_sha256: str
    outcome: str
    """HTTP status ("201"), in-process status ("stored"), or "error:<class>"."""
    record_ids: tuple[int, ...]
    patient_id: int | None
    sent_at: float
    """Seconds after the ledger was opened."""
    latency_s: float
    accepted_at: datetime | None
    retry_after: str | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome in ACCEPTED


class Ledger:
    """Every submission of a run, thread-safe, in the order they completed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[Submission] = []
        self._payloads: dict[Key, set[str]] = {}
        self._accepted_keys: set[Key] = set()
        self.opened = time.monotonic()

    def record(
        self,
        text: str,
        outcome: str,
        *,
        begun: float,
        record_ids: Iterable[int] = (),
        patient_id: int | None = None,
        retry_after: str | None = None,
    ) -> Submission:
        """Write down one submission that started at monotonic time ``begun``."""
        done = time.monotonic()
        key, patient = key_of(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        entry = Submission(
            key=key,
            patient=patient,
            payload_sha256=digest,
            outcome=outcome,
            record_ids=tuple(sorted(record_ids)),
            patient_id=patient_id,
            sent_at=begun - self.opened,
            latency_s=done - begun,
            accepted_at=datetime.now(UTC) if outcome in ACCEPTED else None,
            retry_after=retry_after,
        )
        with self._lock:
            self._entries.append(entry)
            self._payloads.setdefault(key, set()).add(digest)
            if entry.accepted:
                self._accepted_keys.add(key)
        return entry

    def entries(self) -> list[Submission]:
        with self._lock:
            return list(self._entries)

    def accepted_keys(self) -> int:
        """How many distinct records have been accepted so far."""
        with self._lock:
            return len(self._accepted_keys)

    def payload_hashes(self) -> dict[Key, set[str]]:
        with self._lock:
            return {k: set(v) for k, v in self._payloads.items()}

    def outcomes(self) -> Counter[str]:
        return Counter(e.outcome for e in self.entries())


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]


# ---------------------------------------------------------------- senders

RESENT = frozenset({"503", "error:ConnectError", "error:ReadError"})
"""Answers after which a sender resends the same record (same key); and any
``busy:...`` outcome of an in-process store (the API would answer 503)."""


def resend_after(outcome: str) -> bool:
    return outcome in RESENT or outcome.startswith("busy:")


def post_record(
    client: httpx.Client, text: str, ledger: Ledger, timeout_s: float
) -> Submission:
    """POST one feed line to ``/v1/records`` and write it down."""
    begun = time.monotonic()
    try:
        reply = client.post(
            "/v1/records",
            content=text.encode(),
            headers={"content-type": "application/json"},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        return ledger.record(text, f"error:{type(exc).__name__}", begun=begun)
    ids: list[int] = []
    patient_id = None
    if reply.status_code in (200, 201):
        body = reply.json()
        ids, patient_id = body["record_ids"], body["patient_id"]
    return ledger.record(
        text,
        str(reply.status_code),
        begun=begun,
        record_ids=ids,
        patient_id=patient_id,
        retry_after=reply.headers.get("retry-after"),
    )


Send = Callable[[str], Submission]
"""Sends one feed line and returns its ledger entry."""
Sender = Callable[[], AbstractContextManager[Send]]
"""Opens what one sender thread sends with (an HTTP client, say)."""


def http_sender(
    base_url: str,
    headers: Mapping[str, str],
    ledger: Ledger,
    request_timeout_s: float = 30.0,
) -> Sender:
    """Each thread its own HTTP client on the API (headers: :func:`api_headers`)."""

    @contextmanager
    def open_client() -> Iterator[Send]:
        with httpx.Client(base_url=base_url, headers=dict(headers)) as client:
            yield lambda text: post_record(client, text, ledger, request_timeout_s)

    return open_client


def in_process_sender(
    sessions: sessionmaker[Session],
    ledger: Ledger,
    after: Callable[[Submission], None],
) -> Sender:
    """Store each line in process (:func:`submit_in_process`), then ``after``."""

    @contextmanager
    def open_sessions() -> Iterator[Send]:
        def send(text: str) -> Submission:
            sent = submit_in_process(sessions, text, ledger)
            after(sent)
            return sent

        yield send

    return open_sessions


class PacedLoad:
    """Send feeds at a steady overall rate, one thread per patient.

    Each thread sends its patient's records in order, record ``j`` of patient
    ``i`` at ``(i + j * patients) / rate`` seconds after the start (at once
    if it is late). A 503 or a refused connection is resent, same key and
    body, after ``resend_after_s``, until accepted or ``give_up_s`` has
    passed since the first try; any other answer is final. Every try goes in
    the ledger (the sender writes it). :meth:`stop` ends the threads early.
    """

    def __init__(
        self,
        feeds: Mapping[str, Sequence[str]],
        rate_per_s: float,
        ledger: Ledger,
        sender: Sender,
        *,
        resend_after_s: float = 0.5,
        give_up_s: float = 60.0,
    ) -> None:
        self.feeds = {p: list(lines) for p, lines in feeds.items()}
        self.rate_per_s = rate_per_s
        self.ledger = ledger
        self.sender = sender
        self.resend_after_s = resend_after_s
        self.give_up_s = give_up_s
        self.total = sum(len(lines) for lines in self.feeds.values())
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started_at = 0.0
        self.finished_at = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        patients = len(self.feeds)
        for i, (patient, lines) in enumerate(sorted(self.feeds.items())):
            thread = threading.Thread(
                target=self._send,
                args=(i, patients, lines),
                name=f"load-{patient}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def _send(self, index: int, patients: int, lines: list[str]) -> None:
        try:
            with self.sender() as send:
                for j, text in enumerate(lines):
                    due = self.started_at + (index + j * patients) / self.rate_per_s
                    if self._stop.wait(max(0.0, due - time.monotonic())):
                        return
                    first = time.monotonic()
                    while not self._stop.is_set():
                        outcome = send(text).outcome
                        late = time.monotonic() - first > self.give_up_s
                        if not resend_after(outcome) or late:
                            break
                        self._stop.wait(self.resend_after_s)
        except BaseException as exc:  # reported by join(), never lost in a thread
            self.errors.append(exc)

    def join(self, timeout_s: float) -> None:
        """Wait for every sender; fails if one is still running or raised."""
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.finished_at = time.monotonic()
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            self.stop()
            raise AssertionError(f"senders still running after {timeout_s} s: {alive}")
        if self.errors:
            raise AssertionError(f"a sender failed: {self.errors[0]!r}")

    def stop(self) -> None:
        self._stop.set()

    def wait_for(self, accepted: int, timeout_s: float) -> None:
        """Block until ``accepted`` distinct records were accepted (or all sent)."""
        deadline = time.monotonic() + timeout_s
        while self.ledger.accepted_keys() < accepted:
            if all(not t.is_alive() for t in self._threads):
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"only {self.ledger.accepted_keys()} of {accepted} records "
                    f"accepted after {timeout_s} s"
                )
            time.sleep(0.02)


def submit_in_process(
    sessions: sessionmaker[Session], text: str, ledger: Ledger
) -> Submission:
    """Store one feed line in process (as ``crsmon ingest``) and write it down.

    A database that stays locked or unreachable is written down as
    ``busy:<SQLite error name or exception class>`` (the API answers 503).
    """
    begun = time.monotonic()
    try:
        outcome = ingest_text(
            sessions, text, now=datetime.now(UTC), channel="fault-test"
        )
    except OperationalError as exc:
        name = getattr(exc.orig, "sqlite_errorname", None) or type(exc.orig).__name__
        return ledger.record(text, f"busy:{name}", begun=begun)
    return ledger.record(
        text,
        outcome.status,
        begun=begun,
        record_ids=outcome.record_ids,
        patient_id=outcome.patient_id,
    )


# ---------------------------------------------------------------- effects

CurrentKey = tuple[str, datetime, str]
HIGH_RISK = "high_risk"
RECORD_IN_KEY = re.compile(r"record=(\d+)")


@dataclass(frozen=True)
class Observed:
    """What a database holds after a run, by natural key."""

    effects: Effects
    """Grade rows (normalized hash in place of ``snapshot_hash``), alerts,
    record states and attempts (harness type: ``assert_no_duplicates``)."""
    history: dict[str, list[GradeKey]]
    """Per patient, every grade row in the order written."""
    current: dict[CurrentKey, tuple[int, str]]
    """The newest grade (and its hash) per patient, time and rule set."""
    rows: dict[Key, list[tuple[int, str, str]]]
    """Per sent record: its rows' (id, content hash, grading state)."""
    patients: dict[str, int]
    graded_after_s: list[float]
    """Per graded row: seconds from ``recorded_at`` to ``graded_at`` (DB clock)."""

    def alerts_of(self, patients: Collection[str]) -> set[AlertKey]:
        return {a for a in self.effects.alerts if a[0] in patients}


def _sent_key(system: str, stored_key: str) -> Key:
    """The key a record was sent under (a vitals set: ``<id>#<quantity>`` rows)."""
    return system, stored_key.split("#", 1)[0]


def read_effects(sessions: sessionmaker[Session]) -> Observed:
    """Read grades, alerts and records, replacing row ids by natural keys."""
    with sessions() as session:
        records = session.execute(
            select(
                ClinicalRecord.id,
                ClinicalRecord.source_system,
                ClinicalRecord.source_record_id,
                ClinicalRecord.content_hash,
                ClinicalRecord.grading_state,
                ClinicalRecord.recorded_at,
                ClinicalRecord.graded_at,
            ).order_by(ClinicalRecord.id)
        ).all()
        grades = session.execute(
            select(
                Patient.pseudonym,
                Grade.evaluated_at,
                Grade.rule_set,
                Grade.grade,
                Grade.snapshot,
                Grade.reasons,
            )
            .join(Patient, Patient.id == Grade.patient_id)
            .order_by(Grade.id)
        ).all()
        alerts = session.execute(
            select(Patient.pseudonym, Alert.kind, Alert.dedup_key, Alert.grade).join(
                Patient, Patient.id == Alert.patient_id
            )
        ).all()
        patients = dict(session.execute(select(Patient.pseudonym, Patient.id)).all())
    plain = Effects.read(sessions)  # states and attempts
    natural = {str(r.id): f"{r.source_system}/{r.source_record_id}" for r in records}
    history: dict[str, list[GradeKey]] = {}
    current: dict[CurrentKey, tuple[int, str]] = {}
    for pseudonym, at, rule_set, grade, snapshot, reasons in grades:
        sources = {
            f: natural.get(str(v), str(v)) for f, v in snapshot["sources"].items()
        }
        digest = content_hash(
            {"snapshot": {**snapshot, "sources": sources}, "reasons": reasons}
        )
        history.setdefault(pseudonym, []).append(
            (pseudonym, at, rule_set, grade, digest)
        )
        current[(pseudonym, at, rule_set)] = (grade, digest)

    def dedup(key: str) -> str:
        return RECORD_IN_KEY.sub(lambda m: f"record={natural.get(m[1], m[1])}", key)

    alert_keys: list[AlertKey] = sorted(
        (p, kind, dedup(key), grade) for p, kind, key, grade in alerts
    )
    rows: dict[Key, list[tuple[int, str, str]]] = {}
    graded_after: list[float] = []
    for r in records:
        key = _sent_key(r.source_system, r.source_record_id)
        rows.setdefault(key, []).append((r.id, r.content_hash, r.grading_state))
        if r.graded_at is not None:
            graded_after.append((r.graded_at - r.recorded_at).total_seconds())
    all_grades = sorted(g for rows_ in history.values() for g in rows_)
    effects = Effects(all_grades, alert_keys, plain.states, plain.attempts)
    return Observed(effects, history, current, rows, patients, graded_after)


def serial_oracle(
    lines: Sequence[str],
    tmp_path: Path,
    policy: AlertPolicy,
    *,
    name: str = "oracle",
    per_record: bool = False,
) -> Observed:
    """The same lines stored and graded in process on a fresh SQLite file.

    By default everything is stored first and each patient graded once (the
    batch oracle, as ``worker_harness.oracle`` but with the workers' alert
    policy). ``per_record=True`` grades the patient after every line, in the
    order given: the union of what every prefix of the feed can raise.
    """
    url = f"sqlite:///{tmp_path / f'{name}.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        sessions = make_sessions(engine)
        dispatcher = InProcessDispatcher(
            sessions, resolve_rule_set("astct-2019"), policy
        )
        if per_record:
            for line in lines:
                dispatcher.notify(ingest_all(sessions, [line]))
        else:
            dispatcher.notify(ingest_all(sessions, list(lines)))
        return read_effects(sessions)
    finally:
        engine.dispose()


def expected_content_hash(text: str) -> str:
    """The content hash intake stores for a feed line (``ingest._store``)."""
    parsed = parse_record(text, datetime.now(UTC))
    assert not isinstance(parsed, Refused), parsed
    return content_hash(parsed.model_dump(mode="json"))


# ---------------------------------------------------------------- executions

SUCCEEDED = re.compile(
    r"Task crsmon\.grade_patient\[[0-9a-f-]+\] succeeded in [\d.]+s: (\{[^}]*\})"
)
RECEIVED = re.compile(r"Task crsmon\.grade_patient\[[0-9a-f-]+\] received")
RETRIED = re.compile(r"Task crsmon\.grade_patient\[[0-9a-f-]+\] retry")
RAISED = re.compile(r"Task crsmon\.grade_patient\[[0-9a-f-]+\] raised")
LOST = re.compile(r"Task handler raised error: WorkerLostError")
DB_CONFLICTS = re.compile(
    r"database is locked|deadlock detected|could not serialize|UniqueViolation"
    r"|IntegrityError"
)


@dataclass(frozen=True)
class Executions:
    """What the workers' logs say they did with grading messages."""

    received: int
    succeeded: int
    effective: int
    """Runs that graded at least one record."""
    grades_written: int
    retried: int
    raised: int
    workers_lost: int
    db_conflicts: int

    @staticmethod
    def of(procs: Iterable[Proc]) -> Executions:
        texts = [p.text() for p in procs if p.name == "worker"]
        summaries: list[dict[str, int]] = [
            ast.literal_eval(m) for t in texts for m in SUCCEEDED.findall(t)
        ]
        return Executions(
            received=sum(len(RECEIVED.findall(t)) for t in texts),
            succeeded=len(summaries),
            effective=sum(1 for s in summaries if s["records_graded"] > 0),
            grades_written=sum(s["grades_written"] for s in summaries),
            retried=sum(len(RETRIED.findall(t)) for t in texts),
            raised=sum(len(RAISED.findall(t)) for t in texts),
            workers_lost=sum(len(LOST.findall(t)) for t in texts),
            db_conflicts=sum(len(DB_CONFLICTS.findall(t)) for t in texts),
        )


# ---------------------------------------------------------------- checker


@dataclass
class Report:
    """The figures §4.4 asks for, printed by :meth:`show` (never asserted)."""

    name: str
    submissions: int = 0
    records: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    latency_p50_s: float = 0.0
    latency_p99_s: float = 0.0
    latency_max_s: float = 0.0
    graded_after_max_s: float = 0.0
    grade_rows: int = 0
    alerts: int = 0
    attempts_max: int = 0
    executions: Executions | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def show(self) -> None:
        lines = [
            f"[{self.name}] {self.records} records in {self.submissions} submissions "
            f"{dict(sorted(self.outcomes.items()))}",
            f"  intake latency p50 {self.latency_p50_s * 1000:.0f} ms, "
            f"p99 {self.latency_p99_s * 1000:.0f} ms, "
            f"max {self.latency_max_s * 1000:.0f} ms",
            f"  acceptance -> graded max {self.graded_after_max_s:.1f} s (DB clock); "
            f"grade rows {self.grade_rows}, alerts {self.alerts}, "
            f"attempts max {self.attempts_max}",
        ]
        if self.executions is not None:
            e = self.executions
            lines.append(
                f"  executions: {e.received} deliveries received, {e.succeeded} "
                f"succeeded ({e.effective} graded something, {e.grades_written} "
                f"grade rows written), {e.retried} retried, {e.raised} raised, "
                f"{e.workers_lost} worker-lost, {e.db_conflicts} DB conflict lines"
            )
        lines.extend(f"  {k}: {v}" for k, v in self.extra.items())
        print("\n".join(lines))  # noqa: T201


def check(
    name: str,
    ledger: Ledger,
    observed: Observed,
    expected: Observed,
    feeds: Mapping[str, Sequence[str]],
    *,
    exact_history: Collection[str] | None = None,
    alerts_upper: Observed | None = None,
    injected_failures: int = 0,
    executions: Executions | None = None,
) -> Report:
    """Assert the ledger and the database agree with each other and the oracle.

    ``exact_history``: patients whose full grade history (every row, in
    order) must equal the oracle's (default: all); for the others only the
    current grade at each time must. ``alerts_upper``: when given, the
    alerts of the other patients must lie between ``expected``'s (the batch
    oracle) and its own (the per-record oracle; ``high_risk`` alerts are
    bounded below only, as that oracle may run without the risk model);
    without it, and always for the ``exact_history`` patients, they must
    equal ``expected``'s.
    ``injected_failures``: how many records may end ``failed`` (a poison
    input the test injected).
    """
    entries = ledger.entries()
    sent = {key_of(text)[0]: text for lines in feeds.values() for text in lines}

    # The ledger itself: one payload per key, every record accepted, same ids.
    for key, digests in ledger.payload_hashes().items():
        assert len(digests) == 1, f"{key} was sent with different payloads"
    accepted: dict[Key, list[Submission]] = {}
    for e in entries:
        if e.accepted:
            accepted.setdefault(e.key, []).append(e)
    never = sorted(set(sent) - set(accepted))
    assert not never, (
        f"{len(never)} records never accepted, e.g. {never[:3]}; "
        f"answers: {dict(ledger.outcomes())}"
    )
    assert set(accepted) == set(sent), "the ledger holds keys that were not sent"
    for key, tries in accepted.items():
        assert len({t.record_ids for t in tries}) == 1, (key, tries)
        assert len({t.patient_id for t in tries}) == 1, (key, tries)
        assert sum(t.outcome in STORED for t in tries) <= 1, (key, tries)

    # The database: every accepted record stored once, as sent; nothing else.
    enrolments = {k for k in sent if k[0] == ENROLMENT_SYSTEM}
    assert set(observed.patients) == set(feeds)
    for key in enrolments:
        (first, *_) = accepted[key]
        assert first.patient_id == observed.patients[key_of(sent[key])[1]], key
    clinical = set(sent) - enrolments
    assert set(observed.rows) == clinical, "rows stored that no one sent, or lost"
    for key in clinical:
        ids = accepted[key][0].record_ids
        rows = observed.rows[key]
        assert tuple(sorted(r[0] for r in rows)) == ids, (key, rows, ids)
        digest = expected_content_hash(sent[key])
        assert {r[1] for r in rows} == {digest}, f"{key} stored with other content"

    # Graded: none pending, none failed unless injected.
    states = observed.effects.states
    assert states.get("pending", 0) == 0, states
    assert states.get("failed", 0) <= injected_failures, states
    assert set(states) <= {"graded", "failed"}, states

    # Effects: no duplicates; grades and alerts equal the serial oracle.
    assert_no_duplicates(observed.effects)
    assert observed.current == expected.current, _diff(
        observed.current, expected.current
    )
    exact = set(feeds) if exact_history is None else set(exact_history)
    for patient in exact:
        assert observed.history.get(patient) == expected.history.get(patient), patient
    alerts = set(observed.effects.alerts)
    if alerts_upper is None:
        assert alerts == set(expected.effects.alerts), _diff_sets(
            alerts, set(expected.effects.alerts)
        )
    else:
        got, want = observed.alerts_of(exact), expected.alerts_of(exact)
        assert got == want, _diff_sets(got, want)
        bounded = set(feeds) - exact
        got = observed.alerts_of(bounded)
        missing = expected.alerts_of(bounded) - got
        assert not missing, f"alerts the whole feed raises are missing: {missing}"
        beyond = {a for a in got - alerts_upper.alerts_of(bounded) if a[1] != HIGH_RISK}
        assert not beyond, f"alerts no prefix of the feed raises: {beyond}"

    latencies = [e.latency_s for e in entries]
    return Report(
        name=name,
        submissions=len(entries),
        records=len(sent),
        outcomes=dict(ledger.outcomes()),
        latency_p50_s=percentile(latencies, 0.5),
        latency_p99_s=percentile(latencies, 0.99),
        latency_max_s=max(latencies, default=0.0),
        graded_after_max_s=max(observed.graded_after_s, default=0.0),
        grade_rows=len(observed.effects.grades),
        alerts=len(alerts),
        attempts_max=max(observed.effects.attempts.values(), default=0),
        executions=executions,
    )


def _diff(
    got: Mapping[CurrentKey, tuple[int, str]],
    want: Mapping[CurrentKey, tuple[int, str]],
) -> str:
    wrong = [k for k in want if got.get(k) != want[k]]
    extra = [k for k in got if k not in want]
    return f"{len(wrong)} grades differ or missing, e.g. {wrong[:3]}; extra {extra[:3]}"


def _diff_sets(got: set[AlertKey], want: set[AlertKey]) -> str:
    return f"missing {sorted(want - got)[:5]}; unexpected {sorted(got - want)[:5]}"


# ---------------------------------------------------------------- drain


def pending_rows(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        count = session.scalar(
            select(func.count())
            .select_from(ClinicalRecord)
            .where(ClinicalRecord.grading_state == "pending")
        )
        return count or 0


def stored_rows(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(ClinicalRecord)) or 0


def poll(condition: Callable[[], bool], timeout_s: float, interval: float) -> bool:
    """Whether ``condition`` came true within ``timeout_s`` (errors count as no)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            held = condition()
        except Exception:  # a database or broker still coming back
            held = False
        if held:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
