"""The ``crsmon`` command line."""

from __future__ import annotations

import click

from crsmon import __version__
from crsmon.api.cli import serve
from crsmon.cli.analyze import analyze
from crsmon.cli.audit import audit
from crsmon.cli.bench import bench
from crsmon.cli.db import db
from crsmon.cli.demo import demo
from crsmon.cli.export import export
from crsmon.cli.grade import grade
from crsmon.cli.hl7 import mllp
from crsmon.cli.ingest import ingest
from crsmon.cli.keys import keys
from crsmon.cli.links import links
from crsmon.cli.model import model
from crsmon.cli.regrade import regrade
from crsmon.cli.review import review
from crsmon.cli.rules import rules
from crsmon.cli.schema import schema
from crsmon.cli.sweep import sweep
from crsmon.cli.synth import synth
from workers.cli import beat, worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crsmon")
def main() -> None:
    """crsmon: grade and monitor CRS after CAR T-cell therapy.

    Research software for monitoring and analysis, not a medical device.
    """


main.add_command(analyze)
main.add_command(audit)
main.add_command(db)
main.add_command(demo)
main.add_command(bench)
main.add_command(export)
main.add_command(grade)
main.add_command(ingest)
main.add_command(keys)
main.add_command(mllp)
main.add_command(links)
main.add_command(model)
main.add_command(regrade)
main.add_command(review)
main.add_command(schema)
main.add_command(serve)
main.add_command(sweep)
main.add_command(synth)
# The worker commands live with the workers; the CLI is the one place that joins them.
main.add_command(worker)
main.add_command(beat)
main.add_command(rules)

__all__ = ["main"]
