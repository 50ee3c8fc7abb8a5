"""``crsmon model train|evaluate``: the CRS risk models (risk.md §4)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

DEFAULT_MODELS = Path("models")
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def model() -> None:
    """Train and evaluate the severe-CRS risk models (research use only)."""


@model.command()
@click.option(
    "--feed", "feed", type=_FILE, required=True, help="Training feed (NDJSON)."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_MODELS,
    show_default=True,
    help="Where the model files and manifests are written.",
)
def train(feed: Path, out: Path) -> None:
    """Fit the baseline, dynamic (24 h, 48 h) and comparator models on FEED.

    Only the feed is read (never a truth file). Each model is written as
    <name>.skops with its manifest <name>.json.
    """
    from crsmon.risk.pipeline import train as fit_all

    now = datetime.now(UTC)
    for manifest in fit_all(feed, out, now=now, created_at=now):
        content = json.loads(manifest.read_text())
        held_out = content.get("held_out_auroc") or {}
        scores = ", ".join(f"{k} {v:.3f}" for k, v in sorted(held_out.items()))
        features = len(content["features"])
        suffix = f" (held-out AUROC: {scores})" if scores else ""
        click.echo(
            f"{content['name']}: {content['chosen']}, {features} features{suffix}"
        )


@model.command()
@click.option("--feed", "feed", type=_FILE, required=True, help="Held-out feed.")
@click.option("--truth", type=_FILE, required=True, help="Its truth file (ceiling).")
@click.option(
    "--models",
    "models_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=DEFAULT_MODELS,
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("evaluation"),
    show_default=True,
    help="Where evaluation.json and the reliability plots are written.",
)
def evaluate(feed: Path, truth: Path, models_dir: Path, out: Path) -> None:
    """Evaluate the models on FEED (another seed than training): JSON and a table."""
    from crsmon.risk.artifacts import ModelFileError
    from crsmon.risk.pipeline import evaluate as run
    from crsmon.risk.pipeline import table

    try:
        report = run(feed, truth, models_dir, out, now=datetime.now(UTC))
    except ModelFileError as exc:
        raise click.ClickException(f"model refused: {exc}") from None
    click.echo(table(report))
    click.echo(f"\nwritten: {out / 'evaluation.json'} and the reliability plots")
