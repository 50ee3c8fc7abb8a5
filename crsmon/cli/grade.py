"""``crsmon grade``: grade assessment and episode JSON Lines."""

from __future__ import annotations

import json
from typing import IO, Any

import click

from crsmon.cli.options import rule_set_option
from crsmon.cli.tables import results_table
from crsmon.domain.rules import RuleSet
from crsmon.gradelines import grade_lines


@click.command()
@click.argument("file", type=click.File("r", encoding="utf-8"), default="-")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "table"]),
    default="jsonl",
    show_default=True,
    help="JSON Lines (one result per input line) or a readable table.",
)
@rule_set_option
def grade(file: IO[str], fmt: str, rule_set: RuleSet) -> None:
    """Grade FILE (JSON Lines; `-` or nothing reads standard input) by ASTCT 2019.

    Each line is an assessment object or {"episode": {...}}, optionally with an
    "id". Exit status 1 if any line could not be graded.
    """
    results = grade_lines(file, rule_set)
    if fmt == "table":
        collected: list[dict[str, Any]] = list(results)
        results_table(collected, rule_set)
        failed = any("error" in r for r in collected)
    else:
        failed = False
        for result in results:
            click.echo(json.dumps(result, ensure_ascii=True))
            failed = failed or "error" in result
    raise SystemExit(1 if failed else 0)
