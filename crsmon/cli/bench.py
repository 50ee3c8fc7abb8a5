"""``crsmon bench``: grading, pipeline, latency and regrade figures, each with
the reference it is judged against, measured in one run (docs/performance.md).

Starts its own processes on a throwaway PostgreSQL database of the local server
and a private ``redis-server``; stops and drops them however the run ends.
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

TARGETS = {
    "grading.assessments_per_s": (">=", 200_000.0),
    "pipeline.observations_per_s": (">=", 10_000.0),
    "pipeline.ratio_to_noop_task": (">=", 8.0),
    "latency.p99_ms": ("<=", 500.0),
    "regrade.observations_per_s": (">=", 100_000.0),
    "rss.api_mb": ("<=", 300.0),
    "rss.worker_mb": ("<=", 300.0),
}
"""The issue's targets on this machine kind (2 cores, everything on one box)."""

QUICK = {
    "patients": 40,
    "seconds": 3.0,
    "latency_seconds": 3.0,
    "latency_rate": 100.0,
    "grading_seconds": 0.3,
    "noop_tasks": 200,
    "insert_rows": 2000,
}
FULL = {
    "patients": 1000,
    "seconds": 30.0,
    "latency_seconds": 30.0,
    "latency_rate": 500.0,
    "grading_seconds": 3.0,
    "noop_tasks": 3000,
    "insert_rows": 50_000,
}


def _get(figures: dict[str, Any], path: str) -> float | None:
    node: Any = figures
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None


def verdicts(figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target, the figure measured and whether it is met."""
    found = {}
    for path, (op, target) in TARGETS.items():
        value = _get(figures, path)
        met = (
            None
            if value is None
            else (value >= target if op == ">=" else value <= target)
        )
        found[path] = {"target": f"{op} {target:g}", "measured": value, "met": met}
    return found


def _line(name: str, value: float | None, unit: str, note: str = "") -> str:
    shown = "n/a" if value is None else f"{value:,.1f}"
    return f"  {name:<34} {shown:>14} {unit:<14} {note}"


def report(figures: dict[str, Any]) -> str:
    """The figures as the terminal shows them."""
    g, p, lat, rg = (
        figures.get(k, {}) for k in ("grading", "pipeline", "latency", "regrade")
    )
    ref = figures.get("references", {})
    rss = figures.get("rss", {})
    lines = [
        f"crsmon bench ({figures['mode']}) on {figures['machine']['cpus']} CPUs, "
        f"{figures['machine']['python']}; research software, not a medical device",
        "grading (pure core)",
        _line("with reasons", g.get("assessments_per_s"), "assessments/s"),
        _line(
            "reference: no reasons",
            g.get("reference_per_s"),
            "assessments/s",
            f"ratio {g.get('ratio', float('nan')):.3f}",
        ),
        "pipeline (HTTP -> PostgreSQL -> Celery/Redis -> grades)",
        _line(
            "graded",
            p.get("observations_per_s"),
            "observations/s",
            f"{p.get('records_per_s', float('nan')):,.0f} records/s",
        ),
        _line("intake accepted", p.get("intake_observations_per_s"), "observations/s"),
        _line(
            "reference: no-op Celery task",
            ref.get("noop_tasks_per_s"),
            "tasks/s",
            f"ratio {p.get('ratio_to_noop_task', float('nan')):.2f}",
        ),
        _line(
            "reference: PG executemany",
            ref.get("insert_rows_per_s"),
            "rows/s",
            f"ratio {p.get('ratio_to_insert', float('nan')):.3f}",
        ),
        f"latency (intake -> alert committed, offered "
        f"{lat.get('offered_observations_per_s', float('nan')):,.0f} observations/s)",
        _line("p50", lat.get("p50_ms"), "ms"),
        _line("p95", lat.get("p95_ms"), "ms"),
        _line("p99", lat.get("p99_ms"), "ms", f"{lat.get('alerts_timed', 0)} alerts"),
        "regrade (crsmon regrade of the whole history)",
        _line(
            "regraded",
            rg.get("observations_per_s"),
            "observations/s",
            f"ratio to insert {rg.get('ratio_to_insert', float('nan')):.3f}; "
            f"{rg.get('audit_events', '?')} audit event(s)",
        ),
        "peak RSS",
        _line("API", rss.get("api_mb"), "MB"),
        _line("worker (largest process)", rss.get("worker_mb"), "MB"),
        "targets",
    ]
    for path, v in figures["targets"].items():
        mark = "n/a" if v["met"] is None else ("met" if v["met"] else "NOT met")
        lines.append(f"  {path:<34} {v['target']:>14} {mark}")
    return "\n".join(lines)


@click.command()
@click.option(
    "--quick",
    is_flag=True,
    help="Small sizes (seconds, not minutes): "
    "a smoke run, not the figures of docs/performance.md.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("bench.json"),
    show_default=True,
    help="Where the figures are written as JSON.",
)
@click.option(
    "--pg-admin-url",
    default="postgresql://postgres@127.0.0.1:5432/postgres",
    show_default=True,
    help="A PostgreSQL database the role may CREATE DATABASE from; the run "
    "uses a throwaway database beside it and drops it.",
)
@click.option(
    "--patients",
    type=click.IntRange(1),
    default=None,
    help="Patients in the pipeline and latency runs.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(0.5),
    default=None,
    help="How long the pipeline run sends.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="Worker processes.",
)
def bench(
    quick: bool,
    out: Path,
    pg_admin_url: str,
    patients: int | None,
    seconds: float | None,
    concurrency: int,
) -> None:
    """Measure crsmon on this machine against references of the same run.

    Prints each figure with its reference and ratio and the issue's targets,
    and writes them all to --out. Needs PostgreSQL and redis-server locally.
    """
    from crsmon.bench.grading import bench_grading
    from crsmon.bench.pipeline import (
        bench_latency,
        bench_pipeline,
        bench_regrade,
        bulk_insert_rate,
        noop_round_trip,
        start_stack,
    )
    from crsmon.bench.services import services, start_redis, throwaway_database
    from crsmon.domain import ASTCT_2019

    size = dict(QUICK if quick else FULL)
    if patients is not None:
        size["patients"] = patients
    if seconds is not None:
        size["seconds"] = seconds
    started = time.monotonic()
    figures: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "sizes": size,
        "notice": "crsmon is research software for monitoring and analysis, not a "
        "medical device.",
    }
    click.echo("grading ...", err=True)
    figures["grading"] = bench_grading(ASTCT_2019, min_seconds=size["grading_seconds"])
    with services() as owned, throwaway_database(pg_admin_url) as database_url:
        broker_url = start_redis(owned)
        click.echo("starting the API and a worker ...", err=True)
        stack = start_stack(owned, database_url, broker_url, concurrency=concurrency)
        click.echo("reference: no-op Celery tasks ...", err=True)
        noop = noop_round_trip(stack, int(size["noop_tasks"]))
        click.echo("pipeline ...", err=True)
        pipeline = bench_pipeline(
            stack, patients=int(size["patients"]), seconds=size["seconds"]
        )
        click.echo("latency ...", err=True)
        figures["latency"] = bench_latency(
            stack,
            patients=int(size["patients"]),
            seconds=size["latency_seconds"],
            observations_per_s=size["latency_rate"],
        )
        click.echo("reference: PostgreSQL executemany ...", err=True)
        insert = bulk_insert_rate(stack, int(size["insert_rows"]))
        click.echo("regrade ...", err=True)
        regrade = bench_regrade(stack, "astct-2019+hypotension=haque", jobs=concurrency)
        figures["rss"] = {
            "api_mb": stack.api.peak_rss_mb(),
            "worker_mb": stack.worker.peak_rss_mb(),
        }
    pipeline["ratio_to_noop_task"] = pipeline["observations_per_s"] / noop
    pipeline["ratio_to_insert"] = pipeline["observations_per_s"] / insert["rows_per_s"]
    regrade["ratio_to_insert"] = regrade["observations_per_s"] / insert["rows_per_s"]
    figures["pipeline"] = pipeline
    figures["regrade"] = regrade
    figures["references"] = {
        "noop_tasks_per_s": noop,
        "insert_rows_per_s": insert["rows_per_s"],
        "insert": insert,
        "grading": figures["grading"]["reference"],
    }
    figures["seconds"] = time.monotonic() - started
    figures["targets"] = verdicts(figures)
    out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    click.echo(report(figures))
    click.echo(f"figures written to {out} ({figures['seconds']:.0f} s)")
