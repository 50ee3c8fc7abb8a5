"""``crsmon worker`` and ``crsmon beat``: start the Celery processes from the settings.

Both read ``CRSMON_*`` once, build the app with :func:`make_celery` and hand over
to Celery's own command line, so ``crsmon worker -c 4`` is
``celery -A workers.celery_app worker -c 4`` with crsmon's defaults. Run the
schema migrations (``crsmon db upgrade``) first, and exactly one beat.

Also runnable without the ``crsmon`` entry point: ``python -m workers.cli worker``.
"""

from __future__ import annotations

import logging

import click

from crsmon.settings import load_settings
from workers.celery_app import make_celery


@click.command()
@click.option(
    "-c", "--concurrency", type=click.IntRange(min=1), default=None,
    help="Worker processes (default: one per CPU).",
)  # fmt: skip
@click.option(
    "--pool", type=click.Choice(["prefork", "solo", "threads"]), default="prefork",
    show_default=True,
)  # fmt: skip
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("-n", "--hostname", default=None, help="Node name (default: celery@%h).")
def worker(
    concurrency: int | None, pool: str, loglevel: str, hostname: str | None
) -> None:
    """Run a grading worker (Celery on CRSMON_BROKER_URL)."""
    argv = ["worker", f"--pool={pool}", f"--loglevel={loglevel}"]
    if concurrency is not None:
        argv.append(f"--concurrency={concurrency}")
    if hostname is not None:
        argv.append(f"--hostname={hostname}")
    use_json_logs()
    make_celery(load_settings()).worker_main(argv)


@click.command()
@click.option("--loglevel", default="INFO", show_default=True)
@click.option(
    "-s", "--schedule", type=click.Path(dir_okay=False), default=None,
    help="Beat's state file (default: celerybeat-schedule in the working directory).",
)  # fmt: skip
def beat(loglevel: str, schedule: str | None) -> None:
    """Run the scheduler that triggers the sweeper (run exactly one)."""
    argv = ["beat", f"--loglevel={loglevel}"]
    if schedule is not None:
        argv.append(f"--schedule={schedule}")
    use_json_logs()
    make_celery(load_settings()).start(argv)


def use_json_logs() -> None:
    """Celery sets up its own log handlers; give them crsmon's JSON formatter."""
    from celery.signals import after_setup_logger, after_setup_task_logger

    from crsmon.logs import format_handlers

    def formatted(logger: logging.Logger, **_: object) -> None:
        format_handlers(logger)

    after_setup_logger.connect(formatted, weak=False)
    after_setup_task_logger.connect(formatted, weak=False)


cli = click.Group("workers", commands=[worker, beat], help="crsmon worker processes.")

if __name__ == "__main__":
    cli()
