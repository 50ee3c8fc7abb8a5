"""``crsmon export``: the biostatistician's tables, from the configured database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import click


@click.group()
def export() -> None:
    """Export research tables (pseudonymous; research data, not for clinical use)."""


def _table_command(table: str, summary: str) -> click.Command:
    @click.command(name=table, help=summary)
    @click.option(
        "--format",
        "fmt",
        type=click.Choice(["csv", "parquet"]),
        default="csv",
        show_default=True,
    )
    @click.option(
        "--out",
        type=click.Path(dir_okay=False, path_type=Path),
        required=True,
        help="The file to write; its column dictionary goes to OUT.dictionary.json.",
    )
    @click.option(
        "--rule-set",
        "rule_set",
        default=None,
        metavar="KEY",
        help="Grade under this rule set (default: the live one, CRSMON_RULE_SET).",
    )
    def command(fmt: str, out: Path, rule_set: str | None) -> None:
        from crsmon.cli.options import file_sha256, local_actor
        from crsmon.db.audit import ADMIN, record_event
        from crsmon.db.engine import make_engine, make_sessions
        from crsmon.domain.catalog import resolve_rule_set
        from crsmon.services.exports import (
            Format,
            TableName,
            grade_rows,
            table_rows,
            write_table,
        )
        from crsmon.settings import load_settings

        settings = load_settings()
        try:
            rules = resolve_rule_set(rule_set or settings.rule_set)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--rule-set") from None
        now = datetime.now(UTC)
        name = cast(TableName, table)
        engine = make_engine(settings.database_url)
        try:
            sessions = make_sessions(engine)
            with sessions() as session:
                rows = table_rows(name, grade_rows(session, rules, now=now))
                written = write_table(name, rows, out, cast(Format, fmt))
            with sessions.begin() as session:
                record_event(
                    session,
                    chain=ADMIN,
                    actor=local_actor(),
                    action="export",
                    entity="table",
                    entity_id=name,
                    now=now,
                    details={
                        "format": fmt,
                        "rows": written,
                        "sha256": file_sha256(out),
                        "rule_set": rules.key,
                    },
                )
        finally:
            engine.dispose()
        click.echo(
            f"{table}: {written} rows written to {out} ({rules.key} v{rules.version}); "
            f"columns described in {out.name}.dictionary.json. "
            "Research data, not for clinical decisions."
        )

    return command


export.add_command(
    _table_command(
        "grade-table",
        "One row per patient: baseline, product, CRS course and grade, support, "
        "treatments, peak labs, outcomes, EFS/OS (risk.md §5.5 a).",
    )
)
export.add_command(
    _table_command(
        "efs-long",
        "Start/stop rows for the time-varying Cox model (risk.md §5.5 b).",
    )
)
export.add_command(
    _table_command(
        "adtte",
        "An ADTTE-style long table: EFS, EFSHSCT and OS per patient "
        "(PARAMCD, AVAL, CNSR, EVNTDESC; admiral convention).",
    )
)
