"""The service side of alerts, on SQLite and PostgreSQL.

- severe alerts pushed to webhooks: signed, retried with backoff, recorded;
- quiet patients found by the sweep and alerted once per gap;
- data-quality alerts from the flags the intake stored on records;
- the grading time of each record (the grading-lag metric's source).

Webhook receivers are real HTTP servers on 127.0.0.1 (a thread each).
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from crsmon.cli import main
from crsmon.db.models import Alert, ClinicalRecord, Patient, WebhookDelivery
from crsmon.domain.catalog import resolve_rule_set
from crsmon.services.dispatch import InProcessDispatcher
from crsmon.services.ingest import ingest_text
from crsmon.services.monitoring import AlertPolicy, patients_gone_quiet
from crsmon.services.sweep import sweep_in_process
from crsmon.services.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    WebhookPolicy,
    deliver_due,
    sign,
    verify_signature,
)
from crsmon.settings import Settings

NOW = datetime.now(UTC).replace(microsecond=0)
RULES = resolve_rule_set("astct-2019")
SECRET = b"test-only-webhook-secret"


@dataclass
class Receiver:
    """A webhook endpoint that answers from a script and records what it got."""

    statuses: list[int]
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    def answer(self) -> int:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


@pytest.fixture
def receiver_factory() -> Iterator[Callable[[list[int]], Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(statuses: list[int]) -> Receiver:
        receiver = Receiver(list(statuses))

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers.items()), body))
                self.send_response(receiver.answer())
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def feed(sessions: sessionmaker[Session], *records: dict[str, Any]) -> None:
    """Store feed records (each must be stored) as of NOW."""
    for n, fields in enumerate(records):
        text = json.dumps({"source_system": "t", "source_record_id": f"r{n}", **fields})
        outcome = ingest_text(sessions, text, now=NOW, channel="test")
        assert outcome.status in {"stored", "duplicate"}, outcome.error


def enrol(
    sessions: sessionmaker[Session], patient: str, infused_h_ago: float
) -> dict[str, Any]:
    """Enrol ``patient`` (infused ``infused_h_ago`` hours before NOW); its times."""
    infusion = NOW - timedelta(hours=infused_h_ago)
    feed(
        sessions,
        {
            "kind": "patient",
            "source_record_id": f"enrol-{patient}",
            "patient": patient,
            "age_years": 11.0,
            "care_unit": "PICU",
            "infusion_at": infusion.isoformat(),
        },
    )
    return {"patient": patient, "infusion": infusion}


def at(enrolled: dict[str, Any], hours: float) -> str:
    infusion: datetime = enrolled["infusion"]
    return (infusion + timedelta(hours=hours)).isoformat()


def severe_course(sessions: sessionmaker[Session], patient: str) -> None:
    """Fever, then hypotension on one vasopressor: grade 3 at 10 h."""
    p = enrol(sessions, patient, infused_h_ago=12)
    base = {"patient": patient}
    feed(
        sessions,
        {**base, "kind": "vitals", "source_record_id": f"{patient}-v1",
         "observed_at": at(p, 8), "temperature_c": 39.2, "sbp_mmhg": 100,
         "dbp_mmhg": 60},
        {**base, "kind": "vitals", "source_record_id": f"{patient}-v2",
         "observed_at": at(p, 10), "temperature_c": 39.4, "sbp_mmhg": 78,
         "dbp_mmhg": 40},
        {**base, "kind": "vasopressor_start", "source_record_id": f"{patient}-np",
         "started_at": at(p, 10), "drug": "norepinephrine", "dose": 0.1,
         "unit": "ug/kg/min"},
    )  # fmt: skip


def dispatcher(
    sessions: sessionmaker[Session], urls: tuple[str, ...] = (), **options: Any
) -> InProcessDispatcher:
    policy = AlertPolicy(webhook_urls=urls)
    hooks = WebhookPolicy(urls, SECRET, **options) if urls else None
    return InProcessDispatcher(
        sessions, RULES, policy, clock=lambda: NOW, webhooks=hooks
    )


def patient_id(sessions: sessionmaker[Session], pseudonym: str) -> int:
    with sessions() as session:
        found = session.scalar(select(Patient.id).where(Patient.pseudonym == pseudonym))
    assert found is not None
    return found


def deliveries(sessions: sessionmaker[Session]) -> list[WebhookDelivery]:
    with sessions() as session:
        return list(session.scalars(select(WebhookDelivery).order_by("id")))


def alerts(sessions: sessionmaker[Session], kind: str | None = None) -> list[Alert]:
    query = select(Alert).order_by(Alert.id)
    if kind is not None:
        query = query.where(Alert.kind == kind)
    with sessions() as session:
        return list(session.scalars(query))


def test_a_severe_alert_is_pushed_signed_to_every_url_once(
    sessions: sessionmaker[Session],
    receiver_factory: Callable[[list[int]], Receiver],
) -> None:
    """Grade 3 pushes one signed POST per URL; grading again pushes nothing more."""
    first, second = receiver_factory([204]), receiver_factory([200])
    severe_course(sessions, "P-0101")
    grader = dispatcher(sessions, (first.url, second.url))
    grader.notify([patient_id(sessions, "P-0101")])
    grader.notify([patient_id(sessions, "P-0101")])
    (severe,) = alerts(sessions, "severe_crs")
    rows = deliveries(sessions)
    assert [(d.alert_id, d.url, d.status, d.attempts) for d in rows] == [
        (severe.id, first.url, "delivered", 1),
        (severe.id, second.url, "delivered", 1),
    ]
    assert [d.last_status_code for d in rows] == [204, 200]
    assert all(d.delivered_at is not None for d in rows)
    for receiver, row in zip((first, second), rows, strict=True):
        ((headers, body),) = receiver.received
        now = int(datetime.now(UTC).timestamp())
        assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body, now=now)
        assert not verify_signature(b"another key", headers[SIGNATURE_HEADER], body,
                                    now=now)  # fmt: skip
        assert not verify_signature(SECRET, headers[SIGNATURE_HEADER], body + b" ",
                                    now=now)  # fmt: skip
        assert headers[DELIVERY_HEADER] == str(row.id)
        assert headers[EVENT_HEADER] == "alert.severe_crs"
        content = json.loads(body)
        assert content["patient"] == "P-0101"
        assert content["alert"]["kind"] == "severe_crs"
        assert content["alert"]["grade"] == 3
        assert content["alert"]["href"] == f"/v1/alerts/{severe.id}"
        assert "not a medical device" in content["notice"]
        assert any("vasopressor" in why for why in content["alert"]["reasons"])
    # Only push kinds are pushed: the onset and escalation alerts are not.
    assert {a.kind for a in alerts(sessions)} >= {"crs_onset", "severe_crs"}


def test_a_failing_receiver_is_retried_with_backoff_then_delivered(
    sessions: sessionmaker[Session],
    receiver_factory: Callable[[list[int]], Receiver],
) -> None:
    """500, 503, then 200: each attempt recorded, retries wait 10 s then 20 s."""
    receiver = receiver_factory([500, 503, 200])
    severe_course(sessions, "P-0102")
    grader = dispatcher(sessions, (receiver.url,), backoff_s=10.0)
    grader.notify([patient_id(sessions, "P-0102")])
    (row,) = deliveries(sessions)
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == (
        "pending", 1, 500, "HTTP 500",
    )  # fmt: skip
    first_try = row.last_attempt_at
    assert first_try is not None
    hooks = grader.webhooks
    assert hooks is not None
    clock = {"now": first_try}

    def send() -> Any:
        return deliver_due(sessions, hooks, clock=lambda: clock["now"])

    due = row.next_attempt_at
    assert due - first_try >= timedelta(seconds=10)  # backoff after the 1st failure
    clock["now"] = due - timedelta(seconds=1)
    assert send().attempted == 0  # not due before its backoff
    clock["now"] = due
    report = send()
    assert (report.attempted, report.retrying) == (1, 1)
    (row,) = deliveries(sessions)
    assert (row.attempts, row.last_status_code) == (2, 503)
    assert row.next_attempt_at == clock["now"] + timedelta(seconds=20)
    clock["now"] += timedelta(seconds=20)
    assert send().delivered == 1
    (row,) = deliveries(sessions)
    assert (row.status, row.attempts, row.last_error) == ("delivered", 3, None)
    assert len(receiver.received) == 3
    # Each attempt carries the same delivery id (the receiver's dedup key).
    assert {h[DELIVERY_HEADER] for h, _ in receiver.received} == {str(row.id)}


def test_an_unreachable_receiver_fails_for_good_and_stays_visible(
    sessions: sessionmaker[Session],
) -> None:
    """Connection refused each time: failed after max_attempts, with the error."""
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{closed.server_address[1]}/hook"
    closed.server_close()  # nothing listens there now
    severe_course(sessions, "P-0103")
    grader = dispatcher(sessions, (url,), max_attempts=2, backoff_s=1.0)
    grader.notify([patient_id(sessions, "P-0103")])
    hooks = grader.webhooks
    assert hooks is not None
    later = datetime.now(UTC) + timedelta(minutes=1)
    report = deliver_due(sessions, hooks, clock=lambda: later)
    assert (report.attempted, report.failed) == (1, 1)
    (row,) = deliveries(sessions)
    assert (row.status, row.attempts, row.last_status_code) == ("failed", 2, None)
    assert row.last_error is not None
    assert row.last_error.startswith("ConnectError")
    assert deliver_due(sessions, hooks, clock=lambda: later).attempted == 0


def _one_delivery(sessions: sessionmaker[Session], pseudonym: str, url: str) -> None:
    """A severe course graded without webhooks, then one delivery row due at NOW."""
    severe_course(sessions, pseudonym)
    dispatcher(sessions, ()).notify([patient_id(sessions, pseudonym)])
    with sessions.begin() as session:
        severe = session.scalars(
            select(Alert)
            .join(Patient)
            .where(Alert.kind == "severe_crs", Patient.pseudonym == pseudonym)
        ).one()
        session.add(WebhookDelivery(alert_id=severe.id, url=url, next_attempt_at=NOW))


def test_a_claimed_delivery_is_not_sent_twice_by_a_second_deliverer(
    sessions: sessionmaker[Session],
) -> None:
    """While one deliverer posts, its row is leased: a concurrent one skips it."""
    url = "http://127.0.0.1:9/never-called"
    _one_delivery(sessions, "P-0104", url)
    hooks = WebhookPolicy((url,), SECRET)
    nested: list[int] = []

    def post(_url: str, _body: bytes, _headers: dict[str, str]) -> int:
        inner = deliver_due(sessions, hooks, clock=lambda: NOW, post=post)
        nested.append(inner.attempted)
        return 200

    report = deliver_due(sessions, hooks, clock=lambda: NOW, post=post)
    assert (report.attempted, report.delivered, nested) == (1, 1, [0])


def test_a_late_outcome_never_overwrites_a_newer_attempt(
    sessions: sessionmaker[Session],
) -> None:
    """A post outlives its lease: another deliverer re-sends and succeeds; the
    first deliverer's late failure is then ignored (the row stays delivered)."""
    url = "http://127.0.0.1:9/slow"
    _one_delivery(sessions, "P-0105", url)
    hooks = WebhookPolicy((url,), SECRET, timeout_s=5.0)
    clock = {"now": NOW}
    calls: list[int] = []

    def slow_then_fail(_url: str, _body: bytes, _headers: dict[str, str]) -> int:
        calls.append(1)
        clock["now"] = NOW + timedelta(minutes=5)  # the 50 s lease ran out
        second = deliver_due(
            sessions, hooks, clock=lambda: clock["now"], post=lambda *_: 200
        )
        assert (second.attempted, second.delivered) == (1, 1)
        return 500

    first = deliver_due(
        sessions, hooks, clock=lambda: clock["now"], post=slow_then_fail
    )
    assert (first.attempted, first.delivered, first.retrying, first.failed) == (
        1, 0, 0, 0,
    )  # fmt: skip
    (row,) = deliveries(sessions)
    assert (row.status, row.attempts, row.last_status_code) == ("delivered", 2, 200)
    assert calls == [1]


def test_a_last_attempt_that_never_reports_back_ends_failed(
    sessions: sessionmaker[Session],
) -> None:
    """A deliverer killed during the last allowed attempt: failed, not pending."""
    url = "http://127.0.0.1:9/lost"
    _one_delivery(sessions, "P-0106", url)
    hooks = WebhookPolicy((url,), SECRET, max_attempts=1)

    def killed(_url: str, _body: bytes, _headers: dict[str, str]) -> int:
        raise KeyboardInterrupt  # not an Exception: nothing is recorded

    with pytest.raises(KeyboardInterrupt):
        deliver_due(sessions, hooks, clock=lambda: NOW, post=killed)
    (row,) = deliveries(sessions)
    assert (row.status, row.attempts) == ("pending", 1)
    later = NOW + timedelta(hours=1)
    assert deliver_due(sessions, hooks, clock=lambda: later).attempted == 0
    (row,) = deliveries(sessions)
    assert (row.status, row.last_error) == (
        "failed",
        "gave up: the last attempt never reported back",
    )


def test_a_transport_error_never_stores_the_url(
    sessions: sessionmaker[Session],
) -> None:
    """A receiver URL may carry a token; the recorded error names it <url>."""
    url = "https://hooks.example.org/crs?token=zz-token-zz"
    _one_delivery(sessions, "P-0107", url)
    hooks = WebhookPolicy((url,), SECRET)

    def refused(target: str, _body: bytes, _headers: dict[str, str]) -> int:
        raise OSError(f"cannot reach {target}")

    deliver_due(sessions, hooks, clock=lambda: NOW, post=refused)
    (row,) = deliveries(sessions)
    assert row.last_error == "OSError: cannot reach <url>"


def test_signatures_refuse_stale_malformed_and_foreign_values() -> None:
    """verify_signature answers False, never raises, for a bad header."""
    body = b'{"a":1}'
    good = sign(SECRET, 1000, body)
    assert verify_signature(SECRET, good, body, now=1100)
    assert not verify_signature(SECRET, good, body, now=1000 + 301)  # too old
    for header in ("", "t=x,v1=00", "v1=00", "t=1000,v1=\u00e9\u00e9", "t=1000"):
        assert not verify_signature(SECRET, header, body, now=1000)


def test_webhook_settings_need_a_secret_and_http_urls() -> None:
    """Unsigned pushes and non-HTTP targets are configuration errors."""
    with pytest.raises(ValueError, match="need a webhook_secret"):
        Settings(webhook_urls=["https://example.org/hook"])
    with pytest.raises(ValueError, match="URL scheme"):
        Settings(webhook_urls=["file:///etc/passwd"], webhook_secret="s")
    with pytest.raises(ValueError, match="use https"):
        Settings(webhook_urls=["http://hooks.example.org/"], webhook_secret="s")
    with pytest.raises(ValueError, match="longer than 500"):
        Settings(webhook_urls=[f"https://a.org/{'x' * 500}"], webhook_secret="s")
    assert Settings(webhook_urls=["http://localhost:8080/"], webhook_secret="s")
    settings = Settings(
        webhook_urls=["https://example.org/hook"], webhook_secret="zz-secret-zz"
    )
    hooks = WebhookPolicy.from_settings(settings)
    assert hooks is not None
    assert hooks.secret == b"zz-secret-zz"
    assert "zz-secret-zz" not in repr(hooks) + repr(settings)
    assert WebhookPolicy.from_settings(Settings()) is None
    assert [hooks.backoff(n).total_seconds() for n in (1, 2, 3)] == [10, 20, 40]
    assert hooks.backoff(40).total_seconds() == 3600


def test_a_quiet_patient_gets_one_stale_alert_per_gap_from_the_sweep(
    sessions: sessionmaker[Session],
) -> None:
    """Silent since 10 h (now 20 h): the sweep alerts once; a new vital closes it."""
    p = enrol(sessions, "P-0201", infused_h_ago=20)
    feed(
        sessions,
        *(
            {"kind": "vitals", "patient": "P-0201", "source_record_id": f"q{h}",
             "observed_at": at(p, h), "temperature_c": 37.0}
            for h in (0, 4, 8, 10)
        ),
    )  # fmt: skip
    grader = dispatcher(sessions)
    pid = patient_id(sessions, "P-0201")
    grader.notify([pid])  # graded as of NOW: the open gap is found at once...
    assert [a.dedup_key for a in alerts(sessions, "stale_monitoring")] == [
        "stale_monitoring:gap@10.0"
    ]
    with sessions.begin() as session:  # ...so start again without that alert
        session.execute(delete(Alert))
    with sessions() as session:
        policy = AlertPolicy()
        assert patients_gone_quiet(session, now=NOW, policy=policy) == [pid]
        early = NOW - timedelta(hours=3)  # 17 h: 7 h of silence is not stale
        assert patients_gone_quiet(session, now=early, policy=policy) == []
    report = sweep_in_process(grader, now=NOW, pending_after_s=30)
    assert (report.quiet_patients, report.alerts_raised) == (1, 1)
    (stale,) = alerts(sessions, "stale_monitoring")
    assert stale.triggered_at == p["infusion"] + timedelta(hours=10)
    assert "up to 20.0 h (now)" in stale.reasons[0]
    again = sweep_in_process(grader, now=NOW, pending_after_s=30)
    assert (again.quiet_patients, again.alerts_raised) == (0, 0)


def test_discharged_dead_and_unwatched_patients_are_not_quiet(
    sessions: sessionmaker[Session],
) -> None:
    """Discharge and death end monitoring; day 15 is past the window."""
    discharged = enrol(sessions, "P-0202", infused_h_ago=30)
    dead = enrol(sessions, "P-0203", infused_h_ago=30)
    enrol(sessions, "P-0204", infused_h_ago=15 * 24 + 9)
    feed(
        sessions,
        {"kind": "outcome", "patient": "P-0203", "source_record_id": "d1",
         "at": at(dead, 2), "event": "death", "death_attributable_to_crs": False},
    )  # fmt: skip
    feed(
        sessions,
        {"kind": "discharge", "patient": "P-0202", "source_record_id": "dis1",
         "discharged_at": at(discharged, 3), "destination": "home"},
    )  # fmt: skip
    with sessions() as session:
        assert patients_gone_quiet(session, now=NOW, policy=AlertPolicy()) == []


def test_intake_flags_on_labs_raise_one_data_quality_alert(
    sessions: sessionmaker[Session],
) -> None:
    """An extreme ferritin is stored, graded around and alerted once per record."""
    p = enrol(sessions, "P-0301", infused_h_ago=6)
    lab = {"kind": "lab", "patient": "P-0301", "source_record_id": "lab-1",
           "observed_at": at(p, 5), "analyte": "ferritin", "value": 250_000,
           "unit": "ug/L"}  # fmt: skip
    feed(sessions, lab)
    grader = dispatcher(sessions)
    grader.notify([patient_id(sessions, "P-0301")])
    feed(sessions, {**lab, "source_record_id": "lab-1"})  # a resend: nothing new
    grader.notify([patient_id(sessions, "P-0301")])
    (alert,) = alerts(sessions, "data_quality")
    with sessions() as session:
        record = session.scalars(
            select(ClinicalRecord).where(ClinicalRecord.quantity == "ferritin_ug_l")
        ).one()
    assert alert.dedup_key == f"data_quality:record={record.id}:ferritin_ug_l"
    assert (alert.severity, alert.grade) == ("info", None)
    assert alert.triggered_at == p["infusion"] + timedelta(hours=5)
    assert "ferritin_ug_l" in alert.reasons[0]


def test_each_record_keeps_when_it_was_graded(sessions: sessionmaker[Session]) -> None:
    """graded_at is set by the run that grades a record, never before."""
    p = enrol(sessions, "P-0401", infused_h_ago=6)
    feed(sessions, {"kind": "vitals", "patient": "P-0401", "source_record_id": "g1",
                    "observed_at": at(p, 1), "temperature_c": 37.0})  # fmt: skip
    with sessions() as session:
        assert session.scalars(select(ClinicalRecord.graded_at)).all() == [None]
    dispatcher(sessions).notify([patient_id(sessions, "P-0401")])
    with sessions() as session:
        rows = session.execute(
            select(ClinicalRecord.recorded_at, ClinicalRecord.graded_at)
        ).all()
    for recorded_at, graded_at in rows:
        assert graded_at is not None
        assert graded_at >= recorded_at


def test_crsmon_sweep_command_on_the_embedded_default(
    database_url: str,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`crsmon sweep` finds the quiet patient once and says what it did."""
    p = enrol(sessions, "P-0501", infused_h_ago=30)
    feed(sessions, {"kind": "vitals", "patient": "P-0501", "source_record_id": "s1",
                    "observed_at": at(p, 1), "temperature_c": 37.0})  # fmt: skip
    # Graded when it arrived, 2 h after infusion; silent ever since.
    then = p["infusion"] + timedelta(hours=2)
    InProcessDispatcher(sessions, RULES, AlertPolicy(), clock=lambda: then).notify(
        [patient_id(sessions, "P-0501")]
    )
    monkeypatch.setenv("CRSMON_DATABASE_URL", database_url)
    first = CliRunner().invoke(main, ["sweep"])
    assert first.exit_code == 0, first.output
    assert "sweep: 0 waiting and 1 quiet patients graded (0 failed)" in first.output
    assert "webhooks: 0 attempted" in first.output
    second = CliRunner().invoke(main, ["sweep"])
    assert "0 waiting and 0 quiet patients graded" in second.output
    (stale,) = alerts(sessions, "stale_monitoring")
    assert stale.dedup_key == "stale_monitoring:gap@1.0"


def test_quiet_check_agrees_with_grading_on_corrections_and_transfers(
    sessions: sessionmaker[Session],
) -> None:
    """A death corrected away, or a unit transfer, does not stop the clock;
    pending and failed records leave the patient to its own grading run."""
    alive = enrol(sessions, "P-0601", infused_h_ago=30)
    moved = enrol(sessions, "P-0602", infused_h_ago=30)
    enrol(sessions, "P-0603", infused_h_ago=30)
    failing = enrol(sessions, "P-0604", infused_h_ago=30)
    feed(
        sessions,
        {"kind": "outcome", "patient": "P-0601", "source_record_id": "x1",
         "at": at(alive, 2), "event": "death"},
        {"kind": "outcome", "patient": "P-0601", "source_record_id": "x2",
         "at": at(alive, 2), "event": "relapse", "supersedes": "x1",
         "correction_reason": "wrong event chosen"},
        {"kind": "transfer", "patient": "P-0602", "source_record_id": "x3",
         "transferred_at": at(moved, 20), "care_unit": "ward 4"},
        {"kind": "vitals", "patient": "P-0604", "source_record_id": "x5",
         "observed_at": at(failing, 1), "temperature_c": 37.0},
    )  # fmt: skip
    grader = dispatcher(sessions)
    ids = [patient_id(sessions, f"P-060{n}") for n in (1, 2, 3, 4)]
    then = alive["infusion"] + timedelta(hours=1)
    InProcessDispatcher(sessions, RULES, AlertPolicy(), clock=lambda: then).notify(
        ids[:3]
    )
    with sessions.begin() as session:  # P-0604: its only record failed grading
        session.execute(
            update(ClinicalRecord)
            .where(ClinicalRecord.patient_id == ids[3])
            .values(grading_state="failed")
        )
    feed(sessions, {"kind": "vitals", "patient": "P-0603", "source_record_id": "x4",
                    "observed_at": at(alive, 3), "temperature_c": 37.0})  # fmt: skip
    with sessions() as session:
        quiet = patients_gone_quiet(session, now=NOW, policy=AlertPolicy())
    assert quiet == ids[:2]  # P-0603 has a record pending, P-0604 a failed one
    sweep_in_process(grader, now=NOW, pending_after_s=3600)
    keys = {(a.patient_id, a.dedup_key) for a in alerts(sessions, "stale_monitoring")}
    assert keys == {(ids[0], "stale_monitoring:gap@0.0"),
                    (ids[1], "stale_monitoring:gap@0.0")}  # fmt: skip


def test_a_correction_or_retraction_of_another_patients_record_is_refused(
    sessions: sessionmaker[Session],
) -> None:
    """A mix-up of patients never changes someone else's record."""
    first = enrol(sessions, "P-0701", infused_h_ago=5)
    enrol(sessions, "P-0702", infused_h_ago=5)
    feed(sessions, {"kind": "vitals", "patient": "P-0701", "source_record_id": "y1",
                    "observed_at": at(first, 1), "temperature_c": 38.6})  # fmt: skip
    mixups: list[dict[str, Any]] = [
        {"kind": "retraction", "patient": "P-0702", "source_record_id": "y2",
         "at": at(first, 2), "target_record_id": "y1",
         "reason": "entered in error"},
        {"kind": "vitals", "patient": "P-0702", "source_record_id": "y3",
         "observed_at": at(first, 1), "temperature_c": 37.6, "supersedes": "y1",
         "correction_reason": "typo"},
    ]  # fmt: skip
    for mixup in mixups:
        text = json.dumps({"source_system": "t", **mixup})
        outcome = ingest_text(sessions, text, now=NOW, channel="test")
        assert outcome.status == "conflict"
        assert outcome.error is not None
        assert "names a record of another patient" in outcome.error
    with sessions() as session:
        rows = session.scalars(select(ClinicalRecord).where(
            ClinicalRecord.source_record_id.startswith("y"))).all()  # fmt: skip
    assert [(r.source_record_id, r.retracted_at) for r in rows] == [
        ("y1#temperature_c", None)
    ]


def test_a_failing_push_never_fails_the_grading_run(
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In process, a delivery error is logged; the rows wait for the next sweep."""
    import crsmon.services.dispatch

    def broken(*_: Any, **__: Any) -> Any:
        raise OSError("database gone")

    monkeypatch.setattr(crsmon.services.dispatch, "deliver_due", broken)
    severe_course(sessions, "P-0801")
    grader = dispatcher(sessions, ("http://127.0.0.1:9/x",))
    with caplog.at_level("WARNING", logger="crsmon.services.dispatch"):
        grader.notify([patient_id(sessions, "P-0801")])
    assert "webhook delivery deferred (OSError)" in caplog.text
    (row,) = deliveries(sessions)
    assert (row.status, row.attempts) == ("pending", 0)


def test_sweep_every_keeps_going_when_the_database_fails(
    database_url: str,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failed sweep is reported and retried; a one-shot sweep exits 1."""
    # The package's `sweep` attribute is the command; the module is in sys.modules.
    module = importlib.import_module("crsmon.cli.sweep")
    del sessions  # requested for its migration
    calls: list[int] = []

    def flaky(*_: Any, **__: Any) -> Any:
        calls.append(1)
        raise OperationalError("SELECT", {}, Exception("gone"))

    class Stop(Exception):
        pass

    def sleep(_seconds: float) -> None:
        if len(calls) >= 2:
            raise Stop

    monkeypatch.setenv("CRSMON_DATABASE_URL", database_url)
    monkeypatch.setattr(module, "sweep_in_process", flaky)
    monkeypatch.setattr(module.time, "sleep", sleep)
    looping = CliRunner().invoke(main, ["sweep", "--every", "5"])
    assert isinstance(looping.exception, Stop)
    assert looping.output.count("sweep failed (OperationalError); retrying") == 2
    once = CliRunner().invoke(main, ["sweep"])
    assert once.exit_code == 1
    assert "sweep failed: the database did not answer (OperationalError)" in once.output
