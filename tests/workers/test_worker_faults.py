"""Fault injection with a ledger checker (reliability.md §4.4, §4.5 T1-T4).

Each test runs real processes (`crsmon serve`, Celery workers and beat, a
private redis-server; PostgreSQL: the session's database, or a throwaway
cluster of our own for T3), sends a feed while it injects a fault, waits for
the run to drain and hands the ledger and the database to
:func:`fault_ledger.check`: every record accepted and stored once, 0 lost,
all graded, no duplicate grade or alert, grades and alerts equal to the
serial oracle. Timing figures are printed (``-s`` or ``-rP``), never
asserted, except generous bounds that detect a hang.

- T1: the prefork child SIGKILLed inside its grading transaction and the
  worker main process SIGKILLed (a new worker started), during HTTP intake.
- T2: the private Redis SIGKILLed and restarted empty (no AOF) after a third
  of the records, SIGSTOPped after two thirds (SIGCONT always follows).
- T3: the throwaway PostgreSQL cluster stopped (``-m immediate``) and
  restarted during HTTP intake; 503'd records are resent with the same key.
- T4: concurrent graders on the same patients: every grading message sent
  twice to two workers of two processes each, on PostgreSQL and on SQLite;
  and a strict xfail: each delivery queued on a patient's lock counts an
  attempt (``workers.jobs.claim``), so more concurrent deliveries than the
  attempt limit give up records that never failed.

Workers start the documented way (``celery -A workers.celery_app worker``),
whose Celery log lines the tests read: execution counts, and the pid the
test-only delay hook logs (``crsmon worker`` logs JSON, arguments withheld).
API requests carry :func:`fault_ledger.api_headers`.

The CI variants fit in about three minutes on two cores. The full-size ones
(§4.5 sizes; T4 over 20 seeds) run only with ``CRSMON_FULL_FAULTS=1``.

Only processes these tests start are signalled, by recorded pid; the
machine's Redis (6379) and PostgreSQL server are never touched. Every process
group is SIGKILLed afterwards, even on failure (``worker_procs``), and a
SIGSTOPped Redis always gets SIGCONT first (:func:`sigcont_guard`).
"""

from __future__ import annotations

import functools
import os
import random
import re
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
from fault_ledger import (
    Executions,
    Ledger,
    Observed,
    PacedLoad,
    Report,
    Submission,
    api_headers,
    check,
    course_feed,
    course_feeds,
    course_start,
    http_sender,
    in_process_sender,
    pending_rows,
    poll,
    read_effects,
    serial_oracle,
    shuffled_course,
    stored_rows,
)
from sqlalchemy.orm import Session, sessionmaker
from worker_harness import (
    FAST_VISIBILITY_TIMEOUT_S,
    Effects,
    Proc,
    Processes,
    RedisServer,
    free_port,
    ingest_all,
    service_env,
    service_settings,
    start_beat,
    wait_until,
)

from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade
from crsmon.domain.catalog import resolve_rule_set
from crsmon.services.monitoring import AlertPolicy
from crsmon.settings import Settings
from workers.celery_app import QUEUE, CrsmonCelery, make_celery
from workers.jobs import GRADED, GradingContext, claim, grade_pending
from workers.tasks import TEST_DELAY_ENV, CeleryDispatcher

# The throwaway PostgreSQL cluster of the outage tests lives beside them; this
# folder and that one are not packages, so put it on the path (appended: it
# shadows nothing).
INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.append(str(INTEGRATION))

from pg_cluster import PgCluster, throwaway_cluster  # noqa: E402

pytest_plugins = ("worker_fixtures",)

FULL = os.environ.get("CRSMON_FULL_FAULTS") == "1"
full_only = pytest.mark.skipif(
    not FULL,
    reason="full-size fault run (reliability.md §4.5 sizes): set CRSMON_FULL_FAULTS=1",
)

INTAKE_WAIT_SHARE = 0.8
"""No intake request may take this share of the Redis pause or longer (T2):
the API hands grading messages to a publisher thread and never waits for the
broker (``BackgroundDispatcher``), so a request that waits for Redis to come
back fails the test (CI: 4 s against the 5 s pause; full: 16 s against 20 s).
A hang bound, not a speed target: the spec's 2 s is reported, not asserted
(the count over 2 s is printed)."""
UNAVAILABLE_HANG_S = 10.0
"""A 503 during the database outage comes within this (T3; the spec says 5 s,
as ``test_db_outage``: generous, so a busy CI machine does not flake)."""
GRADE_DELAY_S = 0.3
"""T1: the test-only hook holds each grading transaction open this long, so a
kill lands inside it."""
HOOK = re.compile(r"TEST ONLY \S+: pid (\d+) sleeps [\d.]+ s before committing")


@dataclass(frozen=True)
class Size:
    """How big one run is, and how long its fault lasts."""

    patients: int
    records: int
    """Per patient, the enrolment included."""
    rate_per_s: float
    drain_cap_s: float
    """Hard cap, from the last submission, for every record to be graded."""
    child_kills: int = 0
    main_kills: int = 0
    pause_s: float = 0.0
    """T2: how long Redis stays SIGSTOPped; T3: how long PostgreSQL is down."""

    @property
    def total(self) -> int:
        return self.patients * self.records


T1_CI = Size(10, 10, 20.0, 90, child_kills=2, main_kills=1)
T1_FULL = Size(50, 10, 20.0, 120, child_kills=5, main_kills=2)
T2_CI = Size(10, 9, 15.0, 90, pause_s=5.0)
T2_FULL = Size(30, 10, 10.0, 90, pause_s=20.0)
T3_CI = Size(10, 9, 15.0, 90, pause_s=3.0)
T3_FULL = Size(20, 10, 10.0, 120, pause_s=10.0)
T4_CI = Size(10, 20, 25.0, 90)
T4_FULL = Size(10, 40, 25.0, 180)
T4_FULL_SEEDS = range(20)
T4_TASK_TIME_LIMIT_S = 30


class Phases:
    """Wall-clock time of each phase of a run (printed with the report)."""

    def __init__(self) -> None:
        self._mark = time.monotonic()
        self.laps: list[tuple[str, float]] = []

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps.append((name, now - self._mark))
        self._mark = now

    def text(self) -> str:
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.laps)


# ---------------------------------------------------------------- processes


def spawn_workers(
    procs: Processes, env: dict[str, str], concurrency: int, count: int = 1
) -> list[Proc]:
    """``count`` prefork workers of ``concurrency`` children each, not yet ready
    (``worker_harness.start_worker`` with ``-c N``; see :func:`wait_ready`)."""
    started = []
    for _ in range(count):
        name = f"fault-{uuid.uuid4().hex[:8]}@%h"
        argv = [
            sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
            "--pool=prefork", "-c", str(concurrency), "--loglevel=INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-n", name,
        ]  # fmt: skip
        started.append(procs.start("worker", argv, env))
    return started


def wait_ready(workers: list[Proc]) -> None:
    for proc in workers:
        proc.wait_for_log(r"@\S+ ready\.", timeout=60)


def spawn_api(procs: Processes, env: dict[str, str]) -> tuple[Proc, str]:
    """``crsmon serve`` on a free port (not yet ready); the process and its URL."""
    port = free_port()
    argv = [sys.executable, "-m", "crsmon", "serve", "--port", str(port)]
    return procs.start("api", argv, env), f"http://127.0.0.1:{port}"


def wait_api(api: Proc, base: str, headers: dict[str, str]) -> None:
    def ready() -> bool:
        if api.popen.poll() is not None:
            pytest.fail(f"the API exited:\n{api.tail()}")
        try:
            reply = httpx.get(f"{base}/health/ready", headers=headers, timeout=2)
        except httpx.HTTPError:
            return False
        return reply.status_code == 200

    wait_until(ready, 60, "API ready")


def restart_redis(procs: Processes, port: int, data_dir: Path) -> RedisServer:
    """A new, empty redis-server on ``port`` (no persistence, like the first:
    ``worker_harness.start_redis`` on a given port)."""
    binary = shutil.which("redis-server")
    assert binary is not None
    assert port != 6379  # never the machine's shared Redis
    argv = [
        binary, "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", str(data_dir),
        "--protected-mode", "yes", "--daemonize", "no",
    ]  # fmt: skip
    server = RedisServer(port, procs.start("redis", argv, dict(os.environ)))

    def answers() -> bool:
        try:
            with server.client() as conn:
                return bool(conn.ping())
        except redis.ConnectionError:
            return False

    wait_until(answers, 10, "the restarted redis-server", interval=0.05)
    return server


def wait_for_grading(worker: Proc, timeout_s: float = 30) -> int:
    """The pid of the child that next enters a grading transaction (hook log)."""
    seen = len(HOOK.findall(worker.text()))
    deadline = time.monotonic() + timeout_s
    while True:
        found = HOOK.findall(worker.text())
        if len(found) > seen:
            return int(found[-1])
        if worker.popen.poll() is not None:
            pytest.fail(f"the worker exited:\n{worker.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no grading transaction in {timeout_s} s:\n{worker.tail()}")
        time.sleep(0.01)


def parent_of(pid: int) -> int | None:
    """The parent pid of a running process (``/proc``), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(procs: Processes, *names: str) -> dict[str, bool]:
    """Whether the newest process of each name is still running."""
    found = {}
    for name in names:
        newest = [p for p in procs.started if p.name == name][-1]
        found[name] = newest.popen.poll() is None
    return found


@pytest.fixture
def sigcont_guard() -> Iterator[set[int]]:
    """Pids a test SIGSTOPped: each gets SIGCONT on the way out, whatever happened
    (before ``worker_procs`` SIGKILLs the groups: this fixture is set up later)."""
    stopped: set[int] = set()
    try:
        yield stopped
    finally:
        for pid in stopped:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


# ---------------------------------------------------------------- drain


@dataclass(frozen=True)
class Drain:
    graded_in_s: float
    broker_quiet: bool


def drain(
    sessions: sessionmaker[Session],
    ledger: Ledger,
    cap_s: float,
    broker: RedisServer,
    stop_first: list[Proc],
) -> Drain:
    """Wait until every accepted row is stored and none is pending (hard cap),
    then stop ``stop_first`` (beat) and let the broker empty, so queued and
    unacked duplicates run before the effects are read (up to the visibility
    timeout and a margin: not reaching it is reported, not failed)."""
    accepted = {e.key: e.record_ids for e in ledger.entries() if e.accepted}
    rows = sum(len(ids) for ids in accepted.values())
    begun = time.monotonic()

    def graded() -> bool:
        return stored_rows(sessions) == rows and pending_rows(sessions) == 0

    if not poll(graded, cap_s, 0.2):
        pytest.fail(
            f"not drained after {cap_s} s: {pending_rows(sessions)} rows pending, "
            f"{stored_rows(sessions)} of {rows} stored"
        )
    graded_in = time.monotonic() - begun
    for proc in stop_first:
        proc.kill_group()

    def quiet() -> bool:
        with broker.client() as conn:
            return int(conn.llen(QUEUE)) == 0 and int(conn.hlen("unacked")) == 0

    return Drain(graded_in, poll(quiet, FAST_VISIBILITY_TIMEOUT_S + 10, 0.2))


@functools.cache
def workers_policy() -> AlertPolicy:
    """The workers' alert policy (the shipped risk model included), for the
    oracle; loaded once per test session (it does not depend on the URLs)."""
    return AlertPolicy.from_settings(service_settings("sqlite://", "redis://"))


def all_lines(feeds: dict[str, list[str]]) -> list[str]:
    return [line for lines in feeds.values() for line in lines]


# ---------------------------------------------------------------- HTTP runs


@dataclass
class HttpRun:
    """One run through the API: what a fault injector may look at and change."""

    load: PacedLoad
    broker: RedisServer
    worker: Proc
    worker_env: dict[str, str]
    procs: Processes
    tmp_path: Path
    notes: dict[str, str] = field(default_factory=dict)
    drained_at: float = 0.0
    """Monotonic time every record was found graded."""

    def at(self) -> str:
        return f"{time.monotonic() - self.load.started_at:.1f} s"


def run_over_http(
    name: str,
    size: Size,
    database_url: str,
    sessions: sessionmaker[Session],
    broker: RedisServer,
    procs: Processes,
    tmp_path: Path,
    inject: Callable[[HttpRun], None],
    *,
    worker_extra_env: dict[str, str] | None = None,
) -> tuple[Report, Ledger, HttpRun]:
    """Feeds in through `crsmon serve` to a worker (-c 1) and beat; ``inject``
    runs the faults while the load runs; then drain and check the ledger.

    The processes boot while the test computes the serial oracle.
    """
    phases = Phases()
    feeds = course_feeds(name, size.patients, size.records, course_start())
    env = service_env(database_url, broker.url)
    worker_env = {**env, **(worker_extra_env or {})}
    (worker,) = spawn_workers(procs, worker_env, 1)
    api, base = spawn_api(procs, env)
    expected = serial_oracle(all_lines(feeds), tmp_path, workers_policy())
    phases.lap("oracle")
    wait_ready([worker])
    beat = start_beat(procs, env, tmp_path / "beat-schedule")
    headers = api_headers(database_url)
    wait_api(api, base, headers)
    phases.lap("start-up")

    ledger = Ledger()
    load = PacedLoad(feeds, size.rate_per_s, ledger, http_sender(base, headers, ledger))
    run = HttpRun(load, broker, worker, worker_env, procs, tmp_path)
    load.start()
    try:
        inject(run)
        load.join(180)
    finally:
        load.stop()
    phases.lap("load")
    assert alive(procs, "api", "worker", "beat") == {
        "api": True,
        "worker": True,
        "beat": True,
    }, "a process died or hung"
    drain_from = time.monotonic()
    drained = drain(sessions, ledger, size.drain_cap_s, run.broker, [beat])
    run.drained_at = drain_from + drained.graded_in_s
    phases.lap("drain")
    report = check(
        name,
        ledger,
        read_effects(sessions),
        expected,
        feeds,
        executions=Executions.of(procs.started),
    )
    report.extra.update(run.notes)
    finish(report, drained, phases)
    return report, ledger, run


def finish(report: Report, drained: Drain, phases: Phases) -> None:
    report.extra["drain"] = (
        f"all graded {drained.graded_in_s:.1f} s after the last submission; "
        f"broker {'empty' if drained.broker_quiet else 'NOT empty'} afterwards"
    )
    report.extra["phases"] = phases.text()
    report.show()


# ---------------------------------------------------------------- T1


def run_t1(
    size: Size,
    database_url: str,
    sessions: sessionmaker[Session],
    broker: RedisServer,
    procs: Processes,
    tmp_path: Path,
) -> None:
    """SIGKILL the prefork child (inside grading) and the worker main process."""
    kills = size.child_kills + size.main_kills
    mains = {
        round((k + 1) * kills / (size.main_kills + 1)) - 1
        for k in range(size.main_kills)
    }
    plan = ["main" if k in mains else "child" for k in range(kills)]
    done: list[str] = []

    def inject(run: HttpRun) -> None:
        for k, what in enumerate(plan):
            run.load.wait_for(size.total * (k + 1) // (kills + 1), 120)
            child = wait_for_grading(run.worker)
            if what == "child":
                assert parent_of(child) == run.worker.pid  # our worker's child
                os.kill(child, signal.SIGKILL)
                done.append(f"child {child} at {run.at()}")
            else:
                os.kill(run.worker.pid, signal.SIGKILL)  # the main process only
                run.worker.popen.wait(timeout=10)
                done.append(f"main {run.worker.pid} at {run.at()}")
                (run.worker,) = spawn_workers(run.procs, run.worker_env, 1)
                wait_ready([run.worker])
        run.notes["kills"] = "; ".join(done)

    report, _, _ = run_over_http(
        "T1",
        size,
        database_url,
        sessions,
        broker,
        procs,
        tmp_path,
        inject,
        worker_extra_env={TEST_DELAY_ENV: str(GRADE_DELAY_S)},
    )
    assert len(done) == kills
    assert report.executions is not None
    assert report.executions.workers_lost >= 1, "no kill hit a running task"


def test_t1_worker_sigkill_storm_ci(
    worker_pg_url: str,
    worker_pg_sessions: sessionmaker[Session],
    worker_redis: RedisServer,
    worker_procs: Processes,
    tmp_path: Path,
) -> None:
    """T1 CI: 100 records over HTTP at 20/s; the child killed twice, the main once."""
    run_t1(
        T1_CI, worker_pg_url, worker_pg_sessions, worker_redis, worker_procs, tmp_path
    )


@full_only
def test_t1_worker_sigkill_storm_full(
    worker_pg_url: str,
    worker_pg_sessions: sessionmaker[Session],
    worker_redis: RedisServer,
    worker_procs: Processes,
    tmp_path: Path,
) -> None:
    """T1: 500 records for 50 patients at 20/s, 5 child kills, 2 main kills."""
    run_t1(
        T1_FULL, worker_pg_url, worker_pg_sessions, worker_redis, worker_procs, tmp_path
    )


# ---------------------------------------------------------------- T2


def run_t2(
    size: Size,
    database_url: str,
    sessions: sessionmaker[Session],
    broker: RedisServer,
    procs: Processes,
    tmp_path: Path,
    stopped: set[int],
) -> None:
    """Redis SIGKILLed and restarted empty, later SIGSTOPped: intake never waits."""
    resumed = [0.0]

    def inject(run: HttpRun) -> None:
        run.load.wait_for(size.total // 3, 120)
        run.broker.proc.kill_group()  # SIGKILL: queued and unacked messages gone
        killed_at = run.at()
        run.broker = restart_redis(run.procs, run.broker.port, run.tmp_path / "redis")
        run.load.wait_for(2 * size.total // 3, 120)
        pid = run.broker.proc.pid
        stopped.add(pid)
        os.kill(pid, signal.SIGSTOP)
        stopped_at = run.at()
        try:
            time.sleep(size.pause_s)
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed[0] = time.monotonic()
        run.notes["faults"] = (
            f"Redis SIGKILLed at {killed_at} and restarted empty; "
            f"SIGSTOPped at {stopped_at} for {size.pause_s:.0f} s"
        )

    report, ledger, run = run_over_http(
        "T2", size, database_url, sessions, broker, procs, tmp_path, inject
    )
    slow = sum(e.latency_s > 2 for e in ledger.entries())
    print(  # noqa: T201
        f"  all graded within {run.drained_at - resumed[0]:.1f} s of SIGCONT; "
        f"{slow} intake requests over the spec's 2 s"
    )
    # Records are committed before any broker call: every request is 2xx.
    assert set(report.outcomes) <= {"200", "201"}, report.outcomes
    bound = INTAKE_WAIT_SHARE * size.pause_s
    assert report.latency_max_s < bound, (
        f"an intake request took {report.latency_max_s:.1f} s: it waited for "
        f"Redis (paused {size.pause_s:.0f} s)?"
    )


def test_t2_broker_loss_and_hang_ci(
    worker_pg_url: str,
    worker_pg_sessions: sessionmaker[Session],
    worker_redis: RedisServer,
    worker_procs: Processes,
    tmp_path: Path,
    sigcont_guard: set[int],
) -> None:
    """T2 CI: 90 records; Redis killed (empty restart) at 1/3, paused 5 s at 2/3."""
    run_t2(
        T2_CI,
        worker_pg_url,
        worker_pg_sessions,
        worker_redis,
        worker_procs,
        tmp_path,
        sigcont_guard,
    )


@full_only
def test_t2_broker_loss_and_hang_full(
    worker_pg_url: str,
    worker_pg_sessions: sessionmaker[Session],
    worker_redis: RedisServer,
    worker_procs: Processes,
    tmp_path: Path,
    sigcont_guard: set[int],
) -> None:
    """T2 phase A: 300 records; Redis killed at 100, paused 20 s at 200."""
    run_t2(
        T2_FULL,
        worker_pg_url,
        worker_pg_sessions,
        worker_redis,
        worker_procs,
        tmp_path,
        sigcont_guard,
    )


# ---------------------------------------------------------------- T3


def run_t3(size: Size, broker: RedisServer, procs: Processes, tmp_path: Path) -> None:
    """A throwaway cluster stopped and restarted under HTTP intake and workers."""
    with throwaway_cluster(tmp_path) as cluster:
        upgrade(cluster.url)
        engine = make_engine(cluster.url)
        try:
            _t3_on(cluster, make_sessions(engine), size, broker, procs, tmp_path)
        finally:
            procs.kill_all()  # before the cluster goes: no client outlives it
            engine.dispose()


def _t3_on(
    cluster: PgCluster,
    sessions: sessionmaker[Session],
    size: Size,
    broker: RedisServer,
    procs: Processes,
    tmp_path: Path,
) -> None:
    def inject(run: HttpRun) -> None:
        run.load.wait_for(size.total // 3, 120)
        cluster.stop_immediate()
        stopped_at = run.at()
        time.sleep(size.pause_s)
        restarted_in = cluster.start()
        run.notes["faults"] = (
            f"PostgreSQL stopped at {stopped_at} for {size.pause_s:.0f} s, "
            f"answering {restarted_in:.1f} s after the restart began"
        )

    report, ledger, _ = run_over_http(
        "T3", size, cluster.url, sessions, broker, procs, tmp_path, inject
    )
    unavailable = [e for e in ledger.entries() if e.outcome == "503"]
    print(  # noqa: T201
        f"  {len(unavailable)} answers 503 for {len({e.key for e in unavailable})} "
        f"records (each resent, same key); slowest 503 "
        f"{max((e.latency_s for e in unavailable), default=0):.2f} s"
    )
    assert set(report.outcomes) <= {"200", "201", "503"}, report.outcomes
    assert unavailable, "no request met the outage: the fault was not exercised"
    for e in unavailable:
        assert e.retry_after is not None, e
        assert int(e.retry_after) > 0, e
        assert e.latency_s < UNAVAILABLE_HANG_S, f"503 after {e.latency_s:.1f} s"


def test_t3_database_outage_ci(
    worker_redis: RedisServer, worker_procs: Processes, tmp_path: Path
) -> None:
    """T3 CI: 90 records over HTTP; the cluster is down 3 s after the first third."""
    run_t3(T3_CI, worker_redis, worker_procs, tmp_path)


@full_only
def test_t3_database_outage_full(
    worker_redis: RedisServer, worker_procs: Processes, tmp_path: Path
) -> None:
    """T3 (a): 200 records; the cluster is down 10 s."""
    run_t3(T3_FULL, worker_redis, worker_procs, tmp_path)


# ---------------------------------------------------------------- T4


def run_t4(
    size: Size,
    seed: int,
    database_url: str,
    broker: RedisServer,
    procs: Processes,
    tmp_path: Path,
) -> None:
    """Every grading message twice, four grading processes, shuffled intake.

    One sender thread per patient stores its records in process at a steady
    overall rate and publishes the patient's grading message twice after
    each. Half the patients send in clinical order: their grade history and
    alerts must equal the oracle's exactly. The other half send their
    clinical records shuffled: the current grade at each time must equal the
    oracle's, and their alerts lie between the batch oracle's and what
    grading after every record would raise. Exact equality is not defined
    there: an earlier record arriving late opens a course at an earlier
    onset, a new alert key (alerts.py: keys are stable when later
    observations are added), even graded serially in process.
    """
    phases = Phases()
    rng = random.Random(seed)  # noqa: S311 (a reproducible order, not a secret)
    feeds = course_feeds("T4", size.patients, size.records, course_start())
    in_order = set(sorted(feeds)[::2])
    sent = {
        p: lines if p in in_order else shuffled_course(lines, rng)
        for p, lines in feeds.items()
    }
    # No kill here, so no need of the fast visibility timeout; a task time limit
    # far above a grading run (1-2.5 s on a busy 2-core machine), which may
    # queue behind several runs of the same patient for its lock. The limits
    # travel in each message, from the publisher's settings: set them there too.
    limits = {
        "visibility_timeout_s": 2 * T4_TASK_TIME_LIMIT_S,
        "task_time_limit_s": T4_TASK_TIME_LIMIT_S,
    }
    settings = service_settings(database_url, broker.url).model_copy(update=limits)
    env = service_env(
        database_url,
        broker.url,
        **{f"CRSMON_{name.upper()}": str(value) for name, value in limits.items()},
    )
    workers = spawn_workers(procs, env, concurrency=2, count=2)
    expected = serial_oracle(all_lines(feeds), tmp_path, workers_policy(), name="batch")
    upper = serial_oracle(  # without the risk model: 7 times faster here
        [line for p in sorted(set(sent) - in_order) for line in sent[p]],
        tmp_path,
        AlertPolicy(),
        name="prefixes",
        per_record=True,
    )
    phases.lap("oracles")
    wait_ready(workers)
    phases.lap("start-up")

    app = make_celery(settings)
    engine = make_engine(database_url)
    try:
        report, published, load, drained = _t4_load(
            f"T4 {database_url.split(':')[0]} seed {seed}",
            size,
            sent,
            in_order,
            sessions=make_sessions(engine),
            app=app,
            broker=broker,
            expected=expected,
            upper=upper,
            procs=procs,
            phases=phases,
        )
    finally:
        app.close()
        engine.dispose()
    report.extra["load"] = (
        f"{load.total} records sent in {load.finished_at - load.started_at:.1f} s "
        f"by {len(sent)} threads, half in clinical order, half shuffled; "
        f"{published} grading messages (each twice) to 2 workers x 2 processes"
    )
    finish(report, drained, phases)
    assert alive(procs, "worker") == {"worker": True}
    assert report.executions is not None
    assert report.executions.received >= published
    # No fault is injected here: a task that raised is a bug, even if another
    # delivery graded its records later (retries of transient errors allowed).
    assert report.executions.raised == 0, f"{report.executions.raised} tasks raised"
    # BEGIN IMMEDIATE in effect: a store may wait for the writer lock (and be
    # resent after the busy timeout), never fail at once on a stale snapshot.
    assert "busy:SQLITE_BUSY_SNAPSHOT" not in report.outcomes, report.outcomes


def _t4_load(
    name: str,
    size: Size,
    sent: dict[str, list[str]],
    in_order: set[str],
    *,
    sessions: sessionmaker[Session],
    app: CrsmonCelery,
    broker: RedisServer,
    expected: Observed,
    upper: Observed,
    procs: Processes,
    phases: Phases,
) -> tuple[Report, int, PacedLoad, Drain]:
    """Send, publish every message twice, drain, check (the run of :func:`run_t4`)."""
    dispatcher = CeleryDispatcher(app)

    def twice(sub: Submission) -> None:
        if sub.outcome == "stored" and sub.patient_id is not None:
            dispatcher.notify([sub.patient_id])
            dispatcher.notify([sub.patient_id])  # every message twice

    ledger = Ledger()
    sender = in_process_sender(sessions, ledger, twice)
    load = PacedLoad(sent, size.rate_per_s, ledger, sender)
    load.start()
    try:
        load.join(180)
    finally:
        load.stop()
    phases.lap("load")
    stored = sum(e.outcome == "stored" for e in ledger.entries())
    assert dispatcher.published == 2 * stored
    drained = drain(sessions, ledger, size.drain_cap_s, broker, [])
    phases.lap("drain")
    report = check(
        name,
        ledger,
        read_effects(sessions),
        expected,
        sent,
        exact_history=in_order,
        alerts_upper=upper,
        executions=Executions.of(procs.started),
    )
    return report, dispatcher.published, load, drained


MAX_ATTEMPTS = int(Settings.model_fields["max_grading_attempts"].default)


def test_t4_concurrent_deliveries_do_not_use_up_the_attempt_budget(
    worker_sessions: sessionmaker[Session],
) -> None:
    """Six deliveries of one patient claim before the first of them grades.

    What T4 showed with four processes before grading leases (attempts reached
    4 with nothing failing): a running grading holds the patient's lock,
    deliveries queue on it with their claims, and each claim counted an
    attempt on the records that arrived meanwhile, before any of them graded;
    six would have given the records up (the default limit is 5). Now a claim
    leases the records to its delivery, and the others count nothing.
    """
    lines = course_feed("T4-ATT", 8, course_start(), 0)
    (patient,) = ingest_all(worker_sessions, lines)
    claim(worker_sessions, patient, MAX_ATTEMPTS, token="delivery-1")
    for n in range(2, MAX_ATTEMPTS + 2):  # the deliveries queued behind it
        claim(worker_sessions, patient, MAX_ATTEMPTS, token=f"delivery-{n}")
    context = GradingContext(
        sessions=worker_sessions,
        rules=resolve_rule_set("astct-2019"),
        max_attempts=MAX_ATTEMPTS,
        policy=AlertPolicy(),
    )
    grade_pending(context, patient, token="delivery-1")  # it gets the lock
    effects = Effects.read(worker_sessions)
    assert set(effects.states) == {GRADED}, effects.states


def test_a_redelivered_message_still_counts_its_attempts(
    worker_sessions: sessionmaker[Session],
) -> None:
    """A message redelivered after its worker was killed carries its task id:
    each redelivery counts, so a poison record is given up after the budget
    even while its lease is live; another delivery counts once the lease has
    expired."""
    lines = course_feed("T4-POISON", 8, course_start(), 0)
    (patient,) = ingest_all(worker_sessions, lines)
    now = datetime.now(UTC)
    for _ in range(MAX_ATTEMPTS):  # the same message, killed each time
        counted = claim(worker_sessions, patient, MAX_ATTEMPTS, token="m", now=now)
        assert counted.gave_up == 0
    other = claim(worker_sessions, patient, MAX_ATTEMPTS, token="sweep", now=now)
    assert other.gave_up == 0  # the lease is live: not counted
    later = now + timedelta(minutes=5)
    expired = claim(worker_sessions, patient, MAX_ATTEMPTS, token="sweep", now=later)
    assert expired.pending == 0
    assert expired.gave_up > 0
    assert set(Effects.read(worker_sessions).states) == {"failed"}


def test_t4_concurrent_graders_postgresql_ci(
    worker_pg_url: str,
    worker_redis: RedisServer,
    worker_procs: Processes,
    tmp_path: Path,
) -> None:
    """T4 CI on PostgreSQL: 10 patients x 20 records, every message twice."""
    run_t4(T4_CI, 4, worker_pg_url, worker_redis, worker_procs, tmp_path)


def test_t4_concurrent_graders_sqlite_ci(
    worker_redis: RedisServer, worker_procs: Processes, tmp_path: Path
) -> None:
    """T4 CI on SQLite (BEGIN IMMEDIATE): the same run on one file."""
    url = f"sqlite:///{tmp_path / 't4.sqlite3'}"
    upgrade(url)
    run_t4(T4_CI, 4, url, worker_redis, worker_procs, tmp_path)


@full_only
@pytest.mark.parametrize("seed", T4_FULL_SEEDS)
def test_t4_concurrent_graders_postgresql_full(
    seed: int,
    worker_pg_url: str,
    worker_redis: RedisServer,
    worker_procs: Processes,
    tmp_path: Path,
) -> None:
    """T4 on PostgreSQL: 10 patients x 40 records, 20 seeds."""
    run_t4(T4_FULL, seed, worker_pg_url, worker_redis, worker_procs, tmp_path)


@full_only
@pytest.mark.parametrize("seed", T4_FULL_SEEDS)
def test_t4_concurrent_graders_sqlite_full(
    seed: int, worker_redis: RedisServer, worker_procs: Processes, tmp_path: Path
) -> None:
    """T4 on SQLite: 10 patients x 40 records, 20 seeds."""
    url = f"sqlite:///{tmp_path / 't4.sqlite3'}"
    upgrade(url)
    run_t4(T4_FULL, seed, url, worker_redis, worker_procs, tmp_path)
