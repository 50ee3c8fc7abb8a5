"""``crsmon rules``: the rule sets, their rules with citations, and their settings."""

from __future__ import annotations

import click
from rich.table import Table

from crsmon.cli.options import rule_set_option
from crsmon.cli.tables import console as make_console
from crsmon.domain.rules import RuleSet, settings_table


@click.command()
@rule_set_option
def rules(rule_set: RuleSet) -> None:
    """Show a rule set: citation, every rule and convention, and the settings."""
    console = make_console()
    console.print(
        f"[bold]{rule_set.title}[/] key {rule_set.key} version {rule_set.version}"
    )
    console.print(rule_set.citation)
    console.print(f"fingerprint {rule_set.fingerprint()}")
    table = Table(title="Rules and conventions", show_lines=True)
    for column in ("id", "rule", "statement", "source", "status"):
        table.add_column(column, overflow="fold")
    for r in rule_set.rules.values():
        table.add_row(r.id, r.title, r.statement, r.source, r.status)
    console.print(table)
    settings = Table(title="Settings (append +name=value to the key)")
    for column in ("setting", "convention", "values (default first)"):
        settings.add_column(column)
    for name, convention, values in settings_table():
        settings.add_row(name, convention, ", ".join(values))
    console.print(settings)
