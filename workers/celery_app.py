"""The Celery application: Redis is a wake-up signal, the database the queue of record.

Run a worker and one beat (the sweeper's clock) with the ``CRSMON_*`` settings::

    celery -A workers.celery_app worker --pool=prefork -c 4 --loglevel=INFO
    celery -A workers.celery_app beat --loglevel=INFO       # exactly one instance

or ``crsmon worker`` / ``crsmon beat`` (:mod:`workers.cli`).

Importing this module reads nothing. ``make_celery(settings)`` builds an app from
explicit settings (tests, the API). The module attribute ``app`` that the
``celery -A workers.celery_app`` command looks up is built on first access
(PEP 562 ``__getattr__``) from :func:`crsmon.settings.load_settings`, so the
environment is read only by a process that asks for it.

Configuration (reliability.md §1.2), and why:

- JSON only: pickle would let anyone who can write to Redis run code in workers.
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acked only
  after the task returns, and is requeued when its process dies. Celery puts no
  cap on those requeues; the attempt counter in the database does (``jobs``).
- ``worker_prefetch_multiplier = 1``: a worker holds one message per process,
  so a crash strands as few as possible.
- ``worker_cancel_long_running_tasks_on_connection_loss``: a task whose message
  can no longer be acked is stopped instead of running twice in parallel.
- ``task_time_limit`` (hard) and a soft limit below it, both below the
  visibility timeout (the settings refuse otherwise), so a running task is never
  redelivered beside itself.
- ``broker_transport_options``: the visibility timeout; socket and connect
  timeouts so a publish against a hung Redis fails in seconds instead of
  blocking; a fast unacked-restore sweep so a killed worker's message comes back
  about ``visibility_timeout`` seconds later. A consuming worker drops the
  socket (read) timeout (:func:`consumer_transport_options`): there a timed-out
  late ack wedged the consumer for good.
- results ignored (the database holds the grades); connection retry on start-up
  set explicitly.
- beat runs the sweeper every ``sweep_interval_s``; each sweep message expires
  after one interval, so a backlogged queue never piles up sweeps.
"""

from __future__ import annotations

import importlib.abc
import sys
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_process_shutdown
from sqlalchemy import Engine
from threadpoolctl import threadpool_limits

from crsmon.db.engine import make_engine, make_sessions
from crsmon.domain.catalog import resolve_rule_set
from crsmon.domain.rules import RuleSet
from crsmon.services.monitoring import AlertPolicy
from crsmon.services.webhooks import WebhookPolicy
from crsmon.settings import Settings, load_settings
from workers.jobs import GradingContext

GRADE_TASK = "crsmon.grade_patient"
GRADE_MANY_TASK = "crsmon.grade_patients"
"""Several patients in one message (``CRSMON_GRADING_BATCH``)."""
CHECK_TASK = "crsmon.check_patient"
DELIVER_TASK = "crsmon.deliver_webhooks"
SWEEP_TASK = "crsmon.sweep"
NOOP_TASK = "crsmon.noop"
"""Does nothing: the benchmark's reference round trip (``crsmon bench``)."""
QUEUE = "crsmon.grading"

#: Seconds a broker socket may block (connect, send, receive) before it fails.
BROKER_SOCKET_TIMEOUT_S = 2.0
#: Publish retries after the first try; a hung Redis costs at most about
#: ``(1 + PUBLISH_MAX_RETRIES) * BROKER_SOCKET_TIMEOUT_S`` plus the intervals.
PUBLISH_MAX_RETRIES = 2
#: A grading claim stays live for the task's hard time limit and this margin
#: (``workers.jobs.claim``): by then the delivery has finished or was killed.
LEASE_MARGIN_S = 15.0


@dataclass(frozen=True, slots=True)
class GradingSetup:
    """What grading needs besides a database: the rule set and the alert and
    webhook policies (the risk model loaded). The same in every process."""

    rules: RuleSet
    policy: AlertPolicy
    webhooks: WebhookPolicy | None


class _NoPandas(importlib.abc.MetaPathFinder):
    """An import hook that refuses ``pandas`` (and so pyarrow through it)."""

    def find_spec(self, fullname: str, *_: Any) -> None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {fullname!r} in a worker")


def without_pandas() -> None:
    """Make ``import pandas`` fail in this process, unless it is loaded already.

    scikit-learn imports pandas whenever it is installed (``sklearn.utils.fixes``,
    only to recognise DataFrames), and pandas pulls in pyarrow: about 80 MB in
    every worker process, for a library no task uses (the model is scored on
    arrays; exports and analyses run in the API and the CLI). With the import
    refused, scikit-learn takes its no-pandas path (``pd = None``; a finder,
    not a ``None`` in ``sys.modules``, which scikit-learn reads as loaded).
    With pandas the worker's peak RSS was at the 300 MB target of
    docs/performance.md.
    """
    if "pandas" not in sys.modules and not any(
        isinstance(finder, _NoPandas) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _NoPandas())


@dataclass(frozen=True, slots=True)
class Runtime:
    """One process's database engine and the grading context built on it."""

    engine: Engine
    context: GradingContext


class CrsmonCelery(Celery):
    """A Celery app that carries crsmon's settings and a per-process runtime.

    The rule set and the risk model are loaded once in the worker's main
    process, before the pool forks (:meth:`on_worker_init`); each prefork
    child inherits them. The engine is created lazily, in the process that
    runs tasks (a prefork child), and disposed after fork so no pooled
    connection is ever shared between processes.
    """

    crsmon_settings: Settings
    _setup: GradingSetup | None = None
    _runtime: Runtime | None = None
    _marks: Any = None

    def grading_setup(self) -> GradingSetup:
        """The rule set and policies of this app (loaded on first use)."""
        if self._setup is None:
            settings = self.crsmon_settings
            self._setup = GradingSetup(
                rules=resolve_rule_set(settings.rule_set),
                policy=AlertPolicy.from_settings(settings),
                webhooks=WebhookPolicy.from_settings(settings),
            )
        return self._setup

    def queued_marks(self) -> Any:
        """A Redis client on the broker for the queued marks (None if the
        broker is not Redis); one per process, made on first use."""
        url = str(self.conf.broker_url or "")
        if not url.startswith(("redis://", "rediss://")):
            return None
        if self._marks is None:
            import redis

            self._marks = redis.Redis.from_url(
                url,
                socket_timeout=BROKER_SOCKET_TIMEOUT_S,
                socket_connect_timeout=BROKER_SOCKET_TIMEOUT_S,
            )
        return self._marks

    def runtime(self) -> Runtime:
        """This process's engine and grading context (created on first use)."""
        if self._runtime is None:
            settings = self.crsmon_settings
            setup = self.grading_setup()
            engine = make_engine(settings.database_url)
            context = GradingContext(
                sessions=make_sessions(engine),
                rules=setup.rules,
                max_attempts=settings.max_grading_attempts,
                policy=setup.policy,
                webhooks=setup.webhooks,
                lease_s=settings.task_time_limit_s + LEASE_MARGIN_S,
            )
            self._runtime = Runtime(engine, context)
        return self._runtime

    def on_worker_init(self, **_: Any) -> None:
        """Signal receiver (the worker's main process, before the pool forks):
        load the rule set and the risk model here, outside any task.

        Loaded lazily by a child's first task instead, the import of the risk
        model's libraries (scikit-learn, SciPy, pandas: seconds on a busy
        machine) ran inside that task's time limit. When the soft limit fired
        in the middle of it, half-initialized modules stayed in ``sys.modules``
        and the child failed every later task (``NameError``,
        ``AttributeError: partially initialized module``) before it could
        count an attempt or record an error in the database.

        pandas is kept out first (:func:`without_pandas`).
        """
        without_pandas()
        self.grading_setup()
        self.conf.broker_transport_options = consumer_transport_options(
            self.conf.broker_transport_options
        )

    def dispose_runtime(self, *, close: bool = True) -> None:
        """Drop the engine; ``close=False`` after fork (the parent owns the sockets)."""
        if self._runtime is not None:
            self._runtime.engine.dispose(close=close)
            self._runtime = None

    def on_worker_process_init(self, **_: Any) -> None:
        """Signal receiver: a new prefork child must not reuse inherited
        connections, and runs the risk model on one thread (the worker scales
        by processes: a model thread pool per core in every child
        oversubscribed the cores)."""
        threadpool_limits(1)
        self.dispose_runtime(close=False)
        self._marks = None

    def on_worker_process_shutdown(self, **_: Any) -> None:
        """Signal receiver: close this child's connections on the way out."""
        self.dispose_runtime(close=True)

    def close(self) -> None:
        """Close the broker pools and the database engine."""
        self.dispose_runtime(close=True)
        super().close()


def soft_time_limit(settings: Settings) -> float:
    """The soft limit: 80 % of the hard one, so a task can record its failure."""
    return round(settings.task_time_limit_s * 0.8, 3)


def unacked_restore_interval(settings: Settings) -> int:
    """Seconds between scans for unacked messages past the visibility timeout."""
    return max(1, min(10, settings.visibility_timeout_s // 10))


def consumer_transport_options(options: dict[str, Any]) -> dict[str, Any]:
    """A consuming worker's broker transport options: no socket read timeout.

    Reproduced (reliability.md T2; Celery 5.7.0, kombu 5.7.0, redis-py 8.1,
    Redis paused with SIGSTOP for 5 s): with ``socket_timeout`` set, a late
    ack sent while Redis is paused fails ("Couldn't ack ..., reason:
    network:TimeoutError", logged and swallowed by kombu) and the worker never
    consumes again, alive and silent (F10): the BRPOP it had sent is answered
    but never read, and that message is lost. It happened in 4 of 6 runs, and
    in none of 4 without the read timeout, where the ack waits for Redis and
    the worker carries on. Publishers (the API, beat) keep the timeout, so a
    hung Redis never holds an intake request (F12); a publish from inside a
    task (the sweep) is bounded by the task time limit instead. The connect
    timeout stays everywhere.
    """
    return {k: v for k, v in options.items() if k != "socket_timeout"}


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings for ``settings`` (see the module docstring)."""
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": unacked_restore_interval(settings),
            "unacked_restore_throttle": 1,
            "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_S,
            "socket_keepalive": True,
            "max_retries": PUBLISH_MAX_RETRIES,
        },
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": PUBLISH_MAX_RETRIES,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_time_limit": settings.task_time_limit_s,
        "task_soft_time_limit": soft_time_limit(settings),
        "task_ignore_result": True,
        "task_default_queue": QUEUE,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": {
            "crsmon-sweep": {
                "task": SWEEP_TASK,
                "schedule": settings.sweep_interval_s,
                "options": {"expires": settings.sweep_interval_s},
            }
        },
    }


def make_celery(settings: Settings) -> CrsmonCelery:
    """A Celery app for ``settings``, with the crsmon tasks registered.

    Raises:
        ValueError: ``settings.broker_url`` is not set (without a broker,
            grading runs in process and no Celery app is needed).
    """
    if not settings.broker_url:
        raise ValueError("CRSMON_BROKER_URL is not set: the workers need a broker")
    app = CrsmonCelery("crsmon")
    app.crsmon_settings = settings
    app.conf.update(celery_config(settings))
    # Weak receivers (bound methods): they go away with the app.
    worker_init.connect(app.on_worker_init)
    worker_process_init.connect(app.on_worker_process_init)
    worker_process_shutdown.connect(app.on_worker_process_shutdown)
    import workers.tasks  # noqa: F401  (registers the shared tasks on every app)

    return app


_app: CrsmonCelery | None = None


def __getattr__(name: str) -> CrsmonCelery:
    """``workers.celery_app.app``: built from the environment on first access."""
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        _app = make_celery(load_settings())
    return _app
