"""``crsmon ingest``: load a bedside feed file (NDJSON), then grade what changed."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import IO

import click
from sqlalchemy.orm import Session, sessionmaker

from crsmon.cli.options import local_actor
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade
from crsmon.domain.catalog import resolve_rule_set
from crsmon.domain.rules import RuleSet
from crsmon.services.dispatch import InProcessDispatcher
from crsmon.services.ingest import ingest_many
from crsmon.services.monitoring import AlertPolicy
from crsmon.services.webhooks import WebhookPolicy
from crsmon.settings import Settings, load_settings

CHUNK_LINES = 1000
"""Lines stored together (plain records of a chunk share a transaction)."""


@click.command()
@click.argument("file", type=click.File("r", encoding="utf-8"), default="-")
@click.option(
    "--hl7",
    "is_hl7",
    is_flag=True,
    help="FILE holds HL7 v2 ORU^R01 messages (any line endings); each is "
    "answered on standard output as its ACK code and reason.",
)
def ingest(file: IO[str], is_hl7: bool) -> None:
    """Ingest FILE (one feed record per line; `-` reads standard input).

    Good lines are stored and graded; each bad line is reported with its line
    number and reason, and kept in quarantine for review. Exit status 1 if any
    line was refused (with --hl7: if any message was not AA).
    """
    settings = load_settings()
    upgrade(settings.database_url)
    if is_hl7:
        _ingest_hl7(file.read(), settings)
        return
    engine = make_engine(settings.database_url)
    try:
        counts, touched, alerts = _ingest_and_grade(
            make_sessions(engine), file, resolve_rule_set(settings.rule_set),
            AlertPolicy.from_settings(settings),
            WebhookPolicy.from_settings(settings),
        )  # fmt: skip
    finally:
        engine.dispose()
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    click.echo(f"ingested: {summary or 'nothing'}; {len(touched)} patients graded, "
               f"{alerts} alerts raised")  # fmt: skip
    raise SystemExit(1 if counts["refused"] or counts["conflict"] else 0)


def _ingest_and_grade(
    sessions: sessionmaker[Session],
    file: IO[str],
    rules: RuleSet,
    policy: AlertPolicy,
    webhooks: WebhookPolicy | None,
) -> tuple[Counter[str], set[int], int]:
    now = datetime.now(UTC)
    actor = local_actor()
    counts: Counter[str] = Counter()
    touched: set[int] = set()
    chunk: list[tuple[int | None, str]] = []

    def take() -> None:
        outcomes = ingest_many(sessions, chunk, now=now, channel="file", actor=actor)
        for (line_no, _), outcome in zip(chunk, outcomes, strict=True):
            counts[outcome.status] += 1
            if outcome.error is not None:
                click.echo(f"line {line_no}: {outcome.error}", err=True)
            if outcome.patient_id is not None and outcome.status == "stored":
                touched.add(outcome.patient_id)
        chunk.clear()

    for line_no, text in enumerate(file, start=1):
        if text.strip():
            chunk.append((line_no, text))
        if len(chunk) >= CHUNK_LINES:
            take()
    take()
    dispatcher = InProcessDispatcher(sessions, rules, policy, webhooks=webhooks)
    dispatcher.notify(touched)
    alerts = sum(len(run.alerts_raised) for run in dispatcher.runs)
    return counts, touched, alerts


def _ingest_hl7(text: str, settings: Settings) -> None:
    from crsmon.interfaces.hl7v2 import split_messages
    from crsmon.services.mllp import handle_message

    engine = make_engine(settings.database_url)
    sessions = make_sessions(engine)
    dispatcher = InProcessDispatcher(
        sessions,
        resolve_rule_set(settings.rule_set),
        AlertPolicy.from_settings(settings),
        webhooks=WebhookPolicy.from_settings(settings),
    )
    codes: Counter[str] = Counter()
    try:
        for n, message in enumerate(split_messages(text), start=1):
            answer = handle_message(
                sessions,
                dispatcher,
                message,
                facilities=frozenset(settings.hl7_facilities),
                pepper=settings.pepper(),
            )
            codes[answer.code] += 1
            reason = "" if answer.reason is None else f" {answer.reason}"
            click.echo(f"message {n}: {answer.code}{reason}")
    finally:
        engine.dispose()
    alerts = sum(len(run.alerts_raised) for run in dispatcher.runs)
    summary = ", ".join(f"{n} {code}" for code, n in sorted(codes.items()))
    click.echo(f"hl7: {summary or 'no messages'}; {alerts} alerts raised")
    raise SystemExit(0 if set(codes) <= {"AA"} else 1)
