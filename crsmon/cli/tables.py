"""Readable tables for the terminal (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from crsmon.domain.rules import RuleSet

DISCLAIMER = "Research software for monitoring and analysis, not a medical device."


def console() -> Console:
    terminal = Console()
    # Piped output: wide enough that reasons are not folded mid-word.
    return terminal if terminal.is_terminal else Console(width=160)


def _hours(value: float | None, missing: str) -> str:
    return missing if value is None else f"{value:g} h"


def _course(result: dict[str, Any]) -> list[str]:
    if "onset_t_hours" not in result:
        return []
    grades = " ".join(str(g) for g in result["per_observation_astct_grades"])
    return [
        f"episode grades in time order: {grades}",
        f"onset {_hours(result['onset_t_hours'], 'none')}, maximum at "
        f"{_hours(result['max_grade_t_hours'], '-')}, resolved "
        f"{_hours(result['resolution_t_hours'], 'not yet')}, duration "
        f"{_hours(result['duration_hours'], 'unknown')}",
    ]


def results_table(results: list[dict[str, Any]], rules: RuleSet) -> None:
    """Print graded lines as a table: grade, explanation, missing inputs, flags."""
    table = Table(
        title=f"ASTCT CRS grades ({rules.key}, version {rules.version})",
        caption=DISCLAIMER,
        show_lines=True,
    )
    table.add_column("id", overflow="fold")
    table.add_column("grade", justify="center")
    table.add_column("why", overflow="fold", ratio=4)
    table.add_column("missing inputs", overflow="fold", ratio=1)
    table.add_column("flags", overflow="fold", ratio=1)
    for result in results:
        if "error" in result:
            table.add_row(
                str(
                    result["id"]
                    if result["id"] is not None
                    else f"line {result['line']}"
                ),
                "[bold red]error[/]",
                result["error"],
                "",
                "",
            )
            continue
        table.add_row(
            "-" if result["id"] is None else str(result["id"]),
            f"[bold]{result['astct_grade']}[/]",
            "\n".join(_course(result) + result["reasons"]),
            "\n".join(result["missing_inputs"]) or "-",
            "\n".join(result["flags"]) or "-",
        )
    console().print(table)
