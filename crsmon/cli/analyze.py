"""``crsmon analyze efs``: EFS by maximum CRS grade (risk.md §5; research use only).

pandas, lifelines and matplotlib are imported inside the command, so that the
rest of the CLI starts without them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

if TYPE_CHECKING:
    import pandas as pd

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def analyze() -> None:
    """Outcome analyses on the exported grade tables (research use only)."""


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (``.csv``, ``.csv.gz``) or parquet (``.parquet``, ``.pq``) table."""
    import pandas as pd

    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if name.endswith((".csv", ".csv.gz")):
        return pd.read_csv(path, dtype={"patient_id": str, "disease_status": str})
    raise click.ClickException(f"{path}: give a .csv or .parquet table")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _database_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    from crsmon.services import exports
    from crsmon.settings import load_settings

    patients, long = exports.grade_table_frames(load_settings())
    return patients, long


@analyze.command()
@click.option(
    "--landmark-days",
    type=click.FloatRange(min=0, min_open=True),
    default=28.0,
    show_default=True,
    help="Landmark (days after infusion): patients event-free beyond it, grouped "
    "by the grade reached by then, time counted from it.",
)
@click.option(
    "--no-landmark",
    is_flag=True,
    help="All patients from infusion (exposed to guarantee-time bias).",
)
@click.option(
    "--censor-at-hsct",
    is_flag=True,
    help="ELIANA-style: censor at consolidative HSCT (efs_censored_at_hsct_*).",
)
@click.option(
    "--grade-source",
    type=click.Choice(["computed", "adjudicated"]),
    default="computed",
    show_default=True,
    help="adjudicated: a reviewer's adjudicated maximum where present.",
)
@click.option(
    "--horizon-days",
    type=click.FloatRange(min=0, min_open=True),
    default=365.0,
    show_default=True,
    help="EFS is reported at this day after infusion.",
)
@click.option(
    "--table",
    type=_FILE,
    help="Grade table (CSV or parquet); default: the database's export.",
)
@click.option(
    "--long",
    "long_table",
    type=_FILE,
    help="efs_long start/stop table for the time-varying Cox model.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for efs.json, efs.md and efs_km.png.",
)
@click.pass_context
def efs(
    ctx: click.Context,
    landmark_days: float,
    no_landmark: bool,
    censor_at_hsct: bool,
    grade_source: str,
    horizon_days: float,
    table: Path | None,
    long_table: Path | None,
    out: Path,
) -> None:
    """EFS by maximum CRS grade: Kaplan–Meier, log-rank, Cox (risk.md §5).

    The primary analysis is a landmark at day 28. Writes OUT/efs.json,
    OUT/efs.md and OUT/efs_km.png, and prints the headline sentence.
    Research software, not a medical device.
    """
    if no_landmark and ctx.get_parameter_source("landmark_days") in (
        ParameterSource.COMMANDLINE,
        ParameterSource.ENVIRONMENT,
    ):
        raise click.UsageError("give --landmark-days or --no-landmark, not both")
    if long_table is not None and table is None:
        raise click.UsageError("--long needs --table")
    from crsmon.analysis.efs import analyze_efs
    from crsmon.analysis.report import headline, km_plot, markdown_table

    inputs: dict[str, Any]
    if table is not None:
        patients = read_table(table)
        long = read_table(long_table) if long_table is not None else None
        inputs = {"table": str(table), "table_sha256": _sha256(table)}
        if long_table is not None:
            inputs |= {"long": str(long_table), "long_sha256": _sha256(long_table)}
    else:
        patients, long = _database_frames()
        inputs = {"table": "the database (crsmon.services.exports.grade_table_frames)"}
    try:
        result = analyze_efs(
            patients,
            long,
            landmark_days=None if no_landmark else landmark_days,
            censor_at_hsct=censor_at_hsct,
            grade_source="adjudicated" if grade_source == "adjudicated" else "computed",
            horizon_days=horizon_days,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    result["inputs"] = inputs
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "efs.json", out / "efs.md", out / "efs_km.png"]
    written[0].write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    written[1].write_text(markdown_table(result), encoding="utf-8")
    km_plot(patients, result, written[2])
    click.echo(headline(result))
    click.echo(f"written: {', '.join(str(p) for p in written)}")
