"""``crsmon review``: the safety reviewer's queries and adjudication, on the
configured database (``CRSMON_DATABASE_URL``, migrated with ``crsmon db upgrade``).

- ``review now``: patients under monitoring now, with their open alerts;
- ``review alerts``: open alerts by kind, severity and age;
- ``review timeline PSEUDONYM``: one patient's course (``--png FILE`` draws it);
- ``review adjudicate PSEUDONYM``: confirm or override the computed maximum
  grade; ``review adjudications PSEUDONYM`` lists the verdicts.

Readable tables by default, ``--json`` for machines. The same queries as the
API (:mod:`crsmon.services.review`); matplotlib loads only for ``--png``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import click
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from crsmon.cli.options import local_actor
from crsmon.cli.tables import DISCLAIMER, console
from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.models import Patient
from crsmon.db.repository import UnknownPatientError, patient_by_pseudonym
from crsmon.domain.alerts import AlertKind, Severity
from crsmon.domain.catalog import resolve_rule_set
from crsmon.domain.rules import RuleSet
from crsmon.services.review import (
    EVENT_KINDS,
    AdjudicationConflictError,
    AdjudicationRow,
    AlertReviewFilter,
    InvalidAdjudicationError,
    MonitoredPatient,
    NoComputedGradeError,
    PatientFilter,
    adjudicate,
    computed_max_grade,
    latest_adjudications,
    list_adjudications,
    open_alerts_review,
    patient_timeline,
    patients_now,
    timeline_png,
)
from crsmon.settings import Settings, load_settings

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of a table."
)
limit_option = click.option(
    "--limit",
    type=click.IntRange(1, 500),
    default=100,
    show_default=True,
    help="At most this many rows.",
)
offset_option = click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Skip this many rows first.",
)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_plain, indent=2, ensure_ascii=False))


def _when(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M Z")


def _age(hours: float | None) -> str:
    return "-" if hours is None else f"{hours:.1f} h ago"


def _grade(value: int | None) -> str:
    return "-" if value is None else str(value)


@contextmanager
def _database() -> Iterator[tuple[sessionmaker[Session], Settings, RuleSet]]:
    """Sessions on the configured database, its settings and live rule set."""
    settings = load_settings()
    try:
        rules = resolve_rule_set(settings.rule_set)
    except ValueError as exc:
        raise click.ClickException(f"CRSMON_RULE_SET: {exc}") from None
    engine = make_engine(settings.database_url)
    try:
        yield make_sessions(engine), settings, rules
    except SQLAlchemyError as exc:
        raise click.ClickException(
            f"the database did not answer ({type(exc).__name__}); "
            "is it migrated (`crsmon db upgrade`)?"
        ) from None
    finally:
        engine.dispose()


def _patient(session: Session, pseudonym: str) -> Patient:
    try:
        return patient_by_pseudonym(session, pseudonym)
    except UnknownPatientError:
        raise click.ClickException(
            "no patient is enrolled under this pseudonym"
        ) from None


@click.group()
def review() -> None:
    """The safety reviewer's queries, and adjudication of the maximum grade.

    Research software for monitoring and analysis, not a medical device.
    """


def _alert_lines(patient: MonitoredPatient) -> str:
    if not patient.open_alerts:
        return "-"
    return "\n".join(
        escape(f"{a.kind} ({a.severity}) {_when(a.triggered_at)}, {_age(a.age_h)}")
        for a in patient.open_alerts
    )


@review.command("now")
@click.option(
    "--all",
    "include_all",
    is_flag=True,
    help="Also patients out of monitoring (window over, discharged, dead).",
)
@click.option(
    "--min-grade",
    type=click.IntRange(0, 5),
    default=None,
    help="Only patients whose current grade is at least this.",
)
@click.option("--care-unit", default=None, help="Only patients in this unit now.")
@click.option(
    "--open-alerts/--no-open-alerts",
    "has_open_alerts",
    default=None,
    help="Only patients with (or without) open alerts.",
)
@limit_option
@offset_option
@json_option
def now_command(
    include_all: bool,
    min_grade: int | None,
    care_unit: str | None,
    has_open_alerts: bool | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """Patients under monitoring now, highest current grade first, each with
    its open (unacknowledged) alerts.

    Under monitoring: within CRSMON_MONITORING_DAYS of the infusion, in a unit
    stay (not discharged) and alive. `crsmon review now --min-grade 3` answers
    "who is grade 3 or more right now, and which alerts are unacknowledged".
    """
    at = datetime.now(UTC)
    where = PatientFilter(include_all, min_grade, care_unit, has_open_alerts)
    with _database() as (sessions, settings, rules), sessions() as session:
        items, total = patients_now(
            session,
            rule_set=rules.key,
            now=at,
            monitoring_days=settings.monitoring_days,
            where=where,
            limit=limit,
            offset=offset,
        )
    if as_json:
        _echo_json(
            {
                "as_of": at,
                "rule_set": rules.key,
                "monitoring_days": settings.monitoring_days,
                "items": [asdict(p) for p in items],
                "total": total,
                "limit": limit,
                "offset": offset,
            }
        )
        return
    scope = "all patients" if include_all else "patients under monitoring"
    table = Table(
        title=f"{scope} at {_when(at)} ({rules.key}): {total} "
        f"(showing {len(items)} from {offset})",
        caption=DISCLAIMER,
        show_lines=True,
    )
    table.add_column("patient", overflow="fold")
    table.add_column("day", justify="right")
    table.add_column("unit", overflow="fold")
    table.add_column("grade now", justify="center")
    table.add_column("max", justify="center")
    table.add_column("last vitals", overflow="fold")
    table.add_column("open (unacknowledged) alerts", overflow="fold", ratio=3)
    for p in items:
        unit = p.care_unit or ("discharged" if p.discharged_at else "-")
        if p.died_at is not None:
            unit += " (died)"
        table.add_row(
            escape(p.pseudonym if p.monitored else f"{p.pseudonym} (not monitored)"),
            f"day {p.day}\n{p.days_since_infusion:.2f} d",
            escape(unit),
            f"[bold]{_grade(p.current_grade)}[/]\n{_when(p.current_grade_at)}",
            _grade(p.max_grade),
            f"{_when(p.last_vitals_at)}\n{_age(p.last_vitals_age_h)}",
            f"{p.open_alert_count} open\n{_alert_lines(p)}",
        )
    console().print(table)


@review.command("alerts")
@click.option("--kind", type=click.Choice([str(k) for k in AlertKind]), default=None)
@click.option("--severity", type=click.Choice([str(s) for s in Severity]), default=None)
@click.option(
    "--min-age-h",
    type=click.FloatRange(min=0),
    default=None,
    help="Only alerts whose condition is at least this many hours old.",
)
@click.option("--care-unit", default=None, help="Only patients in this unit now.")
@click.option("--patient", default=None, help="Only this patient's alerts.")
@limit_option
@offset_option
@json_option
def alerts_command(
    kind: str | None,
    severity: str | None,
    min_age_h: float | None,
    care_unit: str | None,
    patient: str | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """Open (unacknowledged) alerts: counts by kind and severity with the
    oldest age, then the alerts themselves, oldest first."""
    at = datetime.now(UTC)
    where = AlertReviewFilter(kind, severity, min_age_h, care_unit, patient)
    with _database() as (sessions, _, _), sessions() as session:
        found = open_alerts_review(
            session, now=at, where=where, limit=limit, offset=offset
        )
    if as_json:
        _echo_json(
            {
                "as_of": at,
                "groups": [asdict(g) for g in found.groups],
                "items": [asdict(a) for a in found.items],
                "total": found.total,
                "limit": limit,
                "offset": offset,
            }
        )
        return
    groups = Table(
        title=f"open alerts at {_when(at)}: {found.total}", caption=DISCLAIMER
    )
    for name in ("kind", "severity", "count", "oldest"):
        groups.add_column(name, justify="right" if name == "count" else "left")
    for g in found.groups:
        groups.add_row(
            escape(g.kind),
            escape(g.severity),
            str(g.count),
            f"{_when(g.oldest_triggered_at)} ({_age(g.oldest_age_h)})",
        )
    listed = Table(title=f"oldest first (showing {len(found.items)} from {offset})")
    for name in ("age", "triggered", "patient", "unit", "kind", "severity", "grade"):
        listed.add_column(name, overflow="fold")
    for a in found.items:
        listed.add_row(
            f"{a.age_h:.1f} h",
            _when(a.triggered_at),
            escape(a.patient),
            escape(a.care_unit or "-"),
            escape(a.kind),
            escape(a.severity),
            _grade(a.grade),
        )
    out = console()
    out.print(groups)
    out.print(listed)


@review.command("timeline")
@click.argument("pseudonym")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(EVENT_KINDS),
    help="Only events of this kind (repeatable).",
)
@click.option(
    "--png",
    "png",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Draw the course to this PNG file (temperature, SBP, oxygen, grade).",
)
@click.option(
    "--x-unit",
    type=click.Choice(["hours", "days"]),
    default="hours",
    show_default=True,
    help="Time axis of the PNG.",
)
@json_option
def timeline_command(
    pseudonym: str,
    kinds: tuple[str, ...],
    png: Path | None,
    x_unit: Literal["hours", "days"],
    as_json: bool,
) -> None:
    """One patient's course in time order: current records, grades, alerts,
    acknowledgements and adjudications (retracted and superseded records are
    left out)."""
    with _database() as (sessions, _, rules), sessions() as session:
        timeline = patient_timeline(session, _patient(session, pseudonym), rules)
    if png is not None:
        png.write_bytes(timeline_png(timeline, x_unit=x_unit))
        click.echo(f"wrote {png}", err=as_json)
    events = [e for e in timeline.events if not kinds or e.kind in kinds]
    if as_json:
        _echo_json({**asdict(timeline), "events": [asdict(e) for e in events]})
        return
    if png is not None:
        return
    table = Table(
        title=f"{escape(timeline.patient)}: {len(events)} events "
        f"({timeline.rule_set}), computed maximum grade "
        f"{_grade(timeline.computed_max_grade)}",
        caption=DISCLAIMER,
    )
    table.add_column("t (h)", justify="right")
    table.add_column("time")
    table.add_column("event")
    table.add_column("what", overflow="fold", ratio=3)
    for e in events:
        table.add_row(f"{e.t_hours:g}", _when(e.at), e.kind, escape(e.summary))
    console().print(table)


def _verdict_line(row: AdjudicationRow) -> str:
    return (
        f"adjudication {row.id}: {row.decision} maximum grade "
        f"{row.adjudicated_grade} (computed {row.computed_grade}, grade row "
        f"{row.computed_grade_id}, {row.rule_set}) by {row.by} at "
        f"{_when(row.adjudicated_at)}"
    )


@review.command("adjudicate")
@click.argument("pseudonym")
@click.option("--confirm", is_flag=True, help="Confirm the computed maximum grade.")
@click.option(
    "--override-grade",
    type=click.IntRange(0, 5),
    default=None,
    metavar="N",
    help="Override the computed maximum grade with N (must differ from it).",
)
@click.option("--reason", required=True, help="Why (1 to 500 characters).")
@click.option("--by", "by", required=True, help="Who adjudicates (1 to 120).")
@json_option
def adjudicate_command(
    pseudonym: str,
    confirm: bool,
    override_grade: int | None,
    reason: str,
    by: str,
    as_json: bool,
) -> None:
    """Confirm (--confirm) or override (--override-grade N) the patient's
    computed maximum CRS grade, with a reason.

    A new row every time (the latest counts); grade rows are never changed.
    """
    if confirm == (override_grade is not None):
        raise click.UsageError("give exactly one of --confirm and --override-grade")
    decision = "confirm" if confirm else "override"
    try:
        with _database() as (sessions, _, rules), sessions.begin() as session:
            row = adjudicate(
                session,
                _patient(session, pseudonym),
                decision=decision,
                grade=override_grade,
                reason=reason,
                by=by,
                rule_set=rules.key,
                now=datetime.now(UTC),
                actor=local_actor(),
            )
    except InvalidAdjudicationError as exc:
        raise click.BadParameter(exc.reason, param_hint=f"--{exc.field}") from None
    except AdjudicationConflictError as exc:
        raise click.ClickException(f"--override-grade: {exc.reason}") from None
    except NoComputedGradeError:
        raise click.ClickException(
            "the patient has no computed grade yet: nothing to adjudicate"
        ) from None
    if as_json:
        _echo_json(asdict(row))
    else:
        click.echo(_verdict_line(row))


@review.command("adjudications")
@click.argument("pseudonym")
@limit_option
@offset_option
@json_option
def adjudications_command(
    pseudonym: str, limit: int, offset: int, as_json: bool
) -> None:
    """A patient's adjudications, newest first (the first one counts)."""
    with _database() as (sessions, _, rules), sessions() as session:
        patient = _patient(session, pseudonym)
        rows, total = list_adjudications(
            session, patient.id, limit=limit, offset=offset
        )
        latest = latest_adjudications(session, [patient.id]).get(patient.id)
        computed = computed_max_grade(session, patient.id, rules.key)
    max_now = None if computed is None else computed.grade
    items = [
        {
            **asdict(r),
            "latest": latest is not None and r.id == latest.id,
            "stale": r.stale(max_now),
        }
        for r in rows
    ]
    if as_json:
        _echo_json(
            {
                "patient": pseudonym,
                "computed_max_grade": max_now,
                "items": items,
                "total": total,
                "limit": limit,
                "offset": offset,
            }
        )
        return
    click.echo(
        f"{pseudonym}: computed maximum grade {_grade(max_now)} ({rules.key}); "
        f"{total} adjudications"
    )
    for r, item in zip(rows, items, strict=True):
        flags = ", ".join(k for k in ("latest", "stale") if item[k])
        click.echo(_verdict_line(r) + (f" [{flags}]" if flags else ""))
        click.echo(f"  reason: {r.reason}")


def _share(part: dict[str, Any]) -> str:
    pct = part["pct"]
    return f"{part['n']} of {part['of']}" + ("" if pct is None else f" ({pct:.1f} %)")


def _hours_or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} h"


@review.command("cohort")
@json_option
def cohort_command(as_json: bool) -> None:
    """The cohort: CRS incidence, grade distribution, median onset and
    duration, tocilizumab and steroid use, ICU-level support (every patient)."""
    from crsmon.services.exports import cohort_summary, grade_rows

    at = datetime.now(UTC)
    with _database() as (sessions, _, rules), sessions() as session:
        summary = cohort_summary(grade_rows(session, rules, now=at))
    summary = {"as_of": at, "rule_set": rules.key, **summary}
    if as_json:
        _echo_json(summary)
        return
    table = Table(
        title=f"cohort at {_when(at)}: {summary['patients']} patients "
        f"({rules.key} v{rules.version})",
        caption=DISCLAIMER,
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    grades = summary["grade_distribution"]
    rows = [
        ("CRS (any grade)", _share(summary["crs_incidence"])),
        (
            "maximum grade 0/1/2/3/4/5",
            " / ".join(str(grades[str(g)]) for g in range(6)),
        ),
        ("median onset", _hours_or_dash(summary["median_onset_h"])),
        ("median duration (resolved)", _hours_or_dash(summary["median_duration_h"])),
        ("unresolved courses", str(summary["unresolved"])),
        ("tocilizumab (of CRS)", _share(summary["tocilizumab"])),
        ("steroids (of CRS)", _share(summary["steroids"])),
        ("vasopressors (of CRS)", _share(summary["vasopressors"])),
        ("ICU-level support (of CRS)", _share(summary["icu_level_support"])),
        ("adjudicated maxima", str(summary["adjudicated"])),
        ("records waiting for grading", str(summary["records_pending_grading"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console().print(table)
