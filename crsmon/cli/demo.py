"""``crsmon demo``: a synthetic cohort through the real intake, grading and alerts.

The embedded default end to end, with nothing to configure and no server: a
SQLite file, the intake of ``crsmon ingest`` (:func:`ingest_text`, one
transaction a record, refusals quarantined) and the in-process grader of the
dispatch seam. The feed is built by :mod:`crsmon.synth` so that it ends now;
it is replayed in time order on a replay clock, and each record is graded at
its own time: after every ``--grade-every`` hours of feed time the patients with
new records are graded as of that moment, as a live service would have.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.cli.options import aware_time
from crsmon.cli.tables import console
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade
from crsmon.db.models import Alert, Grade, Patient, QuarantinedRecord
from crsmon.domain.catalog import resolve_rule_set
from crsmon.domain.rules import RuleSet
from crsmon.risk.scoring import RiskScorer
from crsmon.services.dispatch import InProcessDispatcher
from crsmon.services.ingest import Outcome, ingest_text
from crsmon.services.monitoring import AlertPolicy
from crsmon.settings import load_settings
from crsmon.synth import SOURCE_SYSTEM, FeedLine, SyntheticFeed, build_feed

DEFAULT_DATABASE = Path("crsmon-demo.sqlite3")
"""In the current directory, so it can be opened afterwards; replaced each run."""

SEVERE = 3
_HOUR = timedelta(hours=1)
DISCLAIMER = "research software, not a medical device; synthetic data"
CHANNEL = "demo"
"""The quarantine channel of refused demo lines."""


class ReplayDispatcher(InProcessDispatcher):
    """The in-process dispatcher on the replay clock instead of the wall clock.

    A replayed record must be graded as of its own time: graded as of the wall
    clock, every pause in the replay would look like a gap in monitoring.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        rules: RuleSet,
        policy: AlertPolicy,
        at: datetime,
    ) -> None:
        super().__init__(sessions, rules, policy, clock=lambda: self.at)
        self.at = at

    def grade_at(self, patient_ids: Iterable[int], at: datetime) -> None:
        """Grade these patients as of ``at``."""
        self.at = at
        self.notify(patient_ids)


@dataclass
class DemoRun:
    """What a demo run did, for the summary."""

    feed: SyntheticFeed
    database: Path
    replaced: bool
    outcomes: list[tuple[int, FeedLine, Outcome]] = field(default_factory=list)
    grading_runs: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def replay(
    sessions: sessionmaker[Session],
    feed: SyntheticFeed,
    dispatcher: ReplayDispatcher,
    grade_every: timedelta | None,
) -> list[tuple[int, FeedLine, Outcome]]:
    """Ingest the feed line by line in time order; grade at each step's end.

    Steps end at ``feed.now``, ``feed.now - grade_every``, ... so a record at
    time t is graded as of the first step end at or after t (``None``: once,
    at ``feed.now``). Grades are the same either way; only the moment of
    grading, and so of each alert, differs.
    """
    outcomes = []
    touched: set[int] = set()
    step_end = None
    for line_no, line in enumerate(feed.lines, start=1):
        end = feed.now
        if grade_every is not None:
            end -= grade_every * ((feed.now - line.at) // grade_every)
        if step_end is not None and end != step_end and touched:
            dispatcher.grade_at(touched, step_end)
            touched = set()
        step_end = end
        outcome = ingest_text(
            sessions, line.text, now=line.at, channel=CHANNEL, line_no=line_no
        )
        outcomes.append((line_no, line, outcome))
        if outcome.status == "stored" and outcome.patient_id is not None:
            touched.add(outcome.patient_id)
    dispatcher.grade_at(touched, feed.now)
    return outcomes


def _is_demo_database(path: Path) -> bool:
    """True if ``path`` is empty or holds nothing but synthetic demo data."""
    if path.stat().st_size == 0:
        return True
    try:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            names = [row[0] for row in conn.execute("SELECT pseudonym FROM patients")]
            senders = [
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT source_system FROM clinical_records"
                )
            ]
    except sqlite3.Error:
        return False
    return all(n.startswith("SYN-") for n in names) and set(senders) <= {SOURCE_SYSTEM}


def fresh_database(path: Path) -> bool:
    """Make way for a new demo database at ``path``; True if an old one was removed.

    Raises:
        click.ClickException: ``path`` holds something other than demo data.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return False
    if path.is_dir() or not _is_demo_database(path):
        raise click.ClickException(
            f"{path} exists and is not a crsmon demo database; "
            "choose another --database path"
        )
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return True


def run_demo(
    database: Path,
    *,
    now: datetime,
    patients: int,
    days: int,
    seed: int,
    grade_every: timedelta | None,
    rules: RuleSet,
    policy: AlertPolicy,
) -> DemoRun:
    """Build the feed ending at ``now``, replay it into a new database, grade it."""
    started = time.perf_counter()
    feed = build_feed(now, patients=patients, days=days, seed=seed)
    built = time.perf_counter()
    run = DemoRun(feed, database, fresh_database(database))
    url = f"sqlite:///{database.resolve()}"
    upgrade(url)
    engine = make_engine(url)
    try:
        sessions = make_sessions(engine)
        dispatcher = ReplayDispatcher(sessions, rules, policy, feed.now)
        migrated = time.perf_counter()
        run.outcomes = replay(sessions, feed, dispatcher, grade_every)
        run.grading_runs = len(dispatcher.runs)
    finally:
        engine.dispose()
    finished = time.perf_counter()
    run.seconds = {
        "feed": built - started,
        "database": migrated - built,
        "replay": finished - migrated,
        "total": finished - started,
    }
    return run


def _aware_time(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> datetime | None:
    return None if value is None else aware_time(value)


@click.command()
@click.option("--patients", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option(
    "--days",
    type=click.IntRange(2, 60),
    default=14,
    show_default=True,
    help="Days since infusion (vitals every 4 h).",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--database",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_DATABASE,
    show_default=True,
    help="SQLite file to create. An earlier demo database there is replaced; "
    "any other file is left alone (the command stops).",
)
@click.option(
    "--grade-every",
    type=click.FloatRange(min=0, min_open=True),
    default=24.0,
    show_default=True,
    metavar="HOURS",
    help="Grade the patients with new records after every HOURS of feed time.",
)
@click.option(
    "--now",
    "now",
    default=None,
    callback=_aware_time,
    metavar="TIME",
    help="End the feed at TIME (ISO 8601 with a UTC offset) instead of now; "
    "with the same seed, the same TIME gives the same feed.",
)
@click.option(
    "--save-feed",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Also write the feed (NDJSON) here, e.g. for `crsmon ingest`.",
)
def demo(
    patients: int,
    days: int,
    seed: int,
    database: Path,
    grade_every: float,
    now: datetime | None,
    save_feed: Path | None,
) -> None:
    """Replay a synthetic CAR T cohort through the intake, grade it and alert.

    Builds a seeded synthetic feed (PATIENTS patients, DAYS days of 4-hourly
    vitals, oxygen, labs and treatments, and a few deliberately bad records)
    that ends now, ingests it record by record into a new SQLite database,
    grades each patient as the records arrive, and prints a summary. Needs no
    server and no configuration, and never touches the configured database
    (CRSMON_DATABASE_URL); the rule set and the stale-monitoring threshold come
    from the settings. Every patient and value is synthetic.
    """
    settings = load_settings()
    policy = AlertPolicy.from_settings(settings)
    run = run_demo(
        database,
        now=now or datetime.now(UTC),
        patients=patients,
        days=days,
        seed=seed,
        grade_every=timedelta(hours=grade_every),
        rules=resolve_rule_set(settings.rule_set),
        policy=policy,
    )
    if save_feed is not None:
        save_feed.write_text(run.feed.ndjson(), encoding="utf-8")
    print_summary(run, resolve_rule_set(settings.rule_set), console(), policy.risk)


def current_max_grades(session: Session, rule_set: str) -> dict[int, int]:
    """Each patient's highest current grade (the newest row at each time)."""
    newest: dict[tuple[int, datetime], tuple[int, int]] = {}
    rows = session.execute(
        select(Grade.patient_id, Grade.evaluated_at, Grade.id, Grade.grade).where(
            Grade.rule_set == rule_set
        )
    )
    for patient_id, at, row_id, grade in rows:
        key = (patient_id, at)
        if key not in newest or newest[key][0] < row_id:
            newest[key] = (row_id, grade)
    best: dict[int, int] = {}
    for (patient_id, _), (_, grade) in newest.items():
        best[patient_id] = max(grade, best.get(patient_id, 0))
    return best


def print_summary(
    run: DemoRun, rules: RuleSet, out: Console, risk: RiskScorer | None = None
) -> None:
    """Patients by maximum grade, risk beside the grades, alerts by kind,
    refused lines, timing."""
    feed = run.feed
    url = f"sqlite:///{run.database.resolve()}"
    engine = make_engine(url)
    try:
        with make_sessions(engine)() as session:
            tables = _tables(session, rules)
            tables.insert(1, risk_table(session, rules, risk))
    finally:
        engine.dispose()
    out.print(
        Text(
            f"crsmon demo: {len(feed.patients)} SYNTHETIC patients, {feed.days} days "
            f"since infusion, seed {feed.seed}, feed ending "
            f"{feed.now.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
            style="bold",
        )
    )
    statuses = Counter(outcome.status for _, _, outcome in run.outcomes)
    out.print(
        f"{len(run.outcomes)} feed lines: "
        + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        + f"; {run.grading_runs} grading runs ({rules.key})"
    )
    for table in tables:
        out.print(table)
    seconds = run.seconds
    out.print(
        f"Database: {run.database}"
        + (" (the earlier demo database was replaced)" if run.replaced else "")
    )
    out.print(
        f"Elapsed: {seconds['total']:.1f} s (feed {seconds['feed']:.1f} s, "
        f"database {seconds['database']:.1f} s, intake and grading "
        f"{seconds['replay']:.1f} s)"
    )
    out.print(Text(f"crsmon demo: {DISCLAIMER}.", style="bold"))


def risk_table(session: Session, rules: RuleSet, risk: RiskScorer | None) -> Table:
    """Per patient: the grade, the highest risk score and when ``high_risk`` came,
    against when grade 3 came (hours since infusion)."""
    if risk is None:
        table = Table(title="Risk beside the grades: no risk model loaded")
        table.add_column("see /health/ready or CRSMON_RISK_MODEL_DIR")
        return table
    table = Table(
        title=f"Risk beside the grades ({risk.key}, P(grade >= 3 within "
        f"{risk.horizon_h:g} h), high_risk at >= {risk.threshold:.3f})"
    )
    for name, justify in (
        ("patient (synthetic)", "left"),
        ("max grade", "center"),
        ("peak risk", "right"),
        ("high_risk at", "right"),
        ("grade >= 3 at", "right"),
        ("lead", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    best = current_max_grades(session, rules.key)
    for patient in session.scalars(select(Patient).order_by(Patient.pseudonym)):
        peak = session.scalar(
            select(func.max(Grade.risk_probability)).where(
                Grade.patient_id == patient.id, Grade.rule_set == rules.key
            )
        )
        severe = session.scalar(
            select(func.min(Grade.t_hours)).where(
                Grade.patient_id == patient.id,
                Grade.rule_set == rules.key,
                Grade.grade >= SEVERE,
            )
        )
        alerted = session.scalar(
            select(func.min(Alert.triggered_at)).where(
                Alert.patient_id == patient.id, Alert.kind == "high_risk"
            )
        )
        alert_h = None if alerted is None else (alerted - patient.infusion_at) / _HOUR
        lead = (
            "-"
            if alert_h is None or severe is None or alert_h > severe
            else f"{severe - alert_h:.0f} h"
        )
        table.add_row(
            Text(patient.pseudonym),
            str(best.get(patient.id, 0)),
            "-" if peak is None else f"{peak:.0%}",
            "-" if alert_h is None else f"{alert_h:.0f} h",
            "-" if severe is None else f"{severe:.0f} h",
            lead,
        )
    return table


def _tables(session: Session, rules: RuleSet) -> list[Table]:
    names = dict(session.execute(select(Patient.id, Patient.pseudonym)).all())
    best = current_max_grades(session, rules.key)
    by_grade: dict[int, list[str]] = {}
    for patient_id, name in sorted(names.items(), key=lambda item: item[1]):
        by_grade.setdefault(best.get(patient_id, 0), []).append(name)
    grades = Table(title="Patients by maximum ASTCT grade")
    grades.add_column("grade", justify="center")
    grades.add_column("patients", justify="right")
    grades.add_column("pseudonyms (synthetic)", overflow="fold")
    for grade in range(6):
        members = by_grade.get(grade, [])
        grades.add_row(str(grade), str(len(members)), Text(" ".join(members)))

    alerts = Table(title="Alerts by kind")
    alerts.add_column("kind")
    alerts.add_column("severity")
    alerts.add_column("alerts", justify="right")
    alerts.add_column("patients", justify="right")
    counts = session.execute(
        select(
            Alert.kind,
            Alert.severity,
            func.count(Alert.id),
            func.count(func.distinct(Alert.patient_id)),
        )
        .group_by(Alert.kind, Alert.severity)
        .order_by(Alert.kind, Alert.severity)
    )
    for kind, severity, n, patients in counts:
        alerts.add_row(kind, severity, str(n), str(patients))

    refused = Table(title="Rejected records (kept in quarantine)")
    refused.add_column("line", justify="right")
    refused.add_column("record")
    refused.add_column("reason", overflow="fold")
    quarantined = session.scalars(
        select(QuarantinedRecord)
        .where(QuarantinedRecord.channel == CHANNEL)
        .order_by(QuarantinedRecord.line_no, QuarantinedRecord.id)
    )
    for q in quarantined:
        refused.add_row(str(q.line_no), Text(q.source_record_id or "-"), Text(q.error))
    return [grades, alerts, refused]
