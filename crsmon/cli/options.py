"""Options shared by several commands."""

from __future__ import annotations

import getpass
import hashlib
import os
from datetime import datetime
from pathlib import Path

import click

from crsmon.db.audit import Actor
from crsmon.domain.catalog import DEFAULT_RULE_SET, resolve_rule_set
from crsmon.domain.rules import RuleSet


def _rule_set(_ctx: click.Context, _param: click.Parameter, value: str) -> RuleSet:
    try:
        return resolve_rule_set(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


rule_set_option = click.option(
    "--rule-set",
    "rule_set",
    default=DEFAULT_RULE_SET.key,
    show_default=True,
    callback=_rule_set,
    metavar="KEY",
    help="Rule set and settings, e.g. astct-2019+hypotension=haque "
    "(see `crsmon rules`).",
)


def aware_time(value: str) -> datetime:
    """An ISO 8601 time with its UTC offset, or a click error saying what is wrong."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise click.BadParameter("give a UTC offset, e.g. 2025-06-30T00:00:00+00:00")
    return at


def local_actor() -> Actor:
    """The operator at this terminal, as the audit trail names them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = f"uid{os.getuid()}"
    return Actor(f"local:{user}"[:120], "local")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
