"""Real processes for the worker tests: a private redis-server, workers and beat.

Every process is started in its own process group and recorded; the fixture
that owns a :class:`Processes` kills each recorded group with SIGKILL on the way
out, whatever happened in the test, and an ``atexit`` hook does the same if the
test run itself is torn down. Nothing here touches the machine's shared Redis
or PostgreSQL: the tests stop and flush only the ``redis-server`` they started,
on a free loopback port, without persistence.

Missing services skip locally and fail under ``CI=true`` (:func:`require`).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import require
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from crsmon.db.engine import make_engine, make_sessions
from crsmon.db.migrate import upgrade
from crsmon.db.models import Alert, ClinicalRecord, Grade, Patient
from crsmon.domain.catalog import resolve_rule_set
from crsmon.services.dispatch import InProcessDispatcher
from crsmon.services.ingest import ingest_text
from crsmon.services.monitoring import AlertPolicy
from crsmon.settings import Settings

REPO = Path(__file__).resolve().parents[2]

#: Broker timing for the process tests: the shortest visibility timeout the
#: settings allow, so a killed worker's message comes back within seconds.
FAST_VISIBILITY_TIMEOUT_S = 10
FAST_TASK_TIME_LIMIT_S = 8
FAST_SWEEP_S = 1.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.2,
    *,
    detail: Callable[[], str] | None = None,
) -> float:
    """Poll ``condition`` until it holds; the seconds it took. Fails after
    timeout, with what ``detail`` says (the state to diagnose the hang by)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            said = "" if detail is None else f"\n{detail()}"
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{said}")
        time.sleep(interval)
    return time.monotonic() - start


# ---------------------------------------------------------------- processes

_LIVE_GROUPS: set[int] = set()


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    _LIVE_GROUPS.discard(pgid)


@atexit.register
def _kill_leftovers() -> None:  # a last resort if a fixture never tore down
    for pgid in list(_LIVE_GROUPS):
        _kill_group(pgid)


@dataclass
class Proc:
    """A started process (leader of its own process group) and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` in the log; fails on timeout or exit."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.text())
            if found is not None:
                return found
            if self.popen.poll() is not None:
                pytest.fail(f"{self.name} exited early:\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.name}: no {pattern!r} in {timeout} s:\n{self.tail()}"
                )
            time.sleep(0.1)

    def kill_group(self) -> None:
        """SIGKILL the whole process group (main process and its children)."""
        _kill_group(self.popen.pid)
        self.popen.wait(timeout=10)


@dataclass
class Processes:
    """The processes one test started; :meth:`kill_all` ends every group."""

    log_dir: Path
    started: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        log = self.log_dir / f"{name}-{len(self.started)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one
            )
        _LIVE_GROUPS.add(popen.pid)
        proc = Proc(name, popen, log)
        self.started.append(proc)
        return proc

    def tails(self, lines: int = 60) -> str:
        """The last lines of every started process's log (for a failure message)."""
        return "\n".join(
            f"--- {proc.log.name} (exit {proc.popen.poll()}):\n{proc.tail(lines)}"
            for proc in self.started
        )

    def kill_all(self) -> None:
        for proc in self.started:
            _kill_group(proc.pid)
            with suppress(subprocess.TimeoutExpired):  # SIGKILL is final anyway
                proc.popen.wait(timeout=10)


def _interrupt(signum: int, frame: object) -> None:
    del frame
    raise KeyboardInterrupt(f"signal {signum}")  # pytest stops and tears down


@contextmanager
def processes(log_dir: Path) -> Iterator[Processes]:
    """A :class:`Processes` whose groups are killed when the block exits.

    While it is open, SIGTERM (a CI job timeout) interrupts the test run like
    Ctrl-C, so the teardown still kills every group.
    """
    owned = Processes(log_dir)
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield owned
    finally:
        owned.kill_all()
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------- redis


@dataclass
class RedisServer:
    """A private ``redis-server`` on a free loopback port, without persistence."""

    port: int
    proc: Proc

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @contextmanager
    def client(self) -> Iterator[redis.Redis]:
        conn = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        try:
            yield conn
        finally:
            conn.close()

    def queue_length(self, queue: str) -> int:
        with self.client() as conn:
            return int(conn.llen(queue))

    def flushall(self) -> None:
        """FLUSHALL on *this* server only (never the machine's shared Redis)."""
        assert self.port != 6379
        with self.client() as conn:
            conn.flushall()


def start_redis(owned: Processes, data_dir: Path) -> RedisServer:
    """Start a redis-server on a free port (retrying if the port was taken)."""
    binary = shutil.which("redis-server")
    require(binary is not None, "redis-server is not installed")
    assert binary is not None
    for _ in range(5):
        port = free_port()
        argv = [
            binary, "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(data_dir),
            "--protected-mode", "yes", "--daemonize", "no",
        ]  # fmt: skip
        proc = owned.start("redis", argv, dict(os.environ))
        server = RedisServer(port, proc)
        deadline = time.monotonic() + 10
        while proc.popen.poll() is None and time.monotonic() < deadline:
            try:
                with server.client() as conn:
                    if conn.ping():
                        return server
            except redis.ConnectionError:
                time.sleep(0.05)
        proc.kill_group()
    pytest.fail("could not start a private redis-server")


# ---------------------------------------------------------------- workers


def service_settings(database_url: str, broker_url: str) -> Settings:
    """The settings the test's own publisher uses (the same as the workers')."""
    return Settings(
        database_url=database_url,
        broker_url=broker_url,
        visibility_timeout_s=FAST_VISIBILITY_TIMEOUT_S,
        task_time_limit_s=FAST_TASK_TIME_LIMIT_S,
        sweep_interval_s=FAST_SWEEP_S,
        sweep_pending_after_s=FAST_SWEEP_S,
    )


def service_env(database_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    """The environment of a worker or beat process: ours, no inherited CRSMON_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRSMON_")}
    env.update(
        CRSMON_DATABASE_URL=database_url,
        CRSMON_BROKER_URL=broker_url,
        CRSMON_VISIBILITY_TIMEOUT_S=str(FAST_VISIBILITY_TIMEOUT_S),
        CRSMON_TASK_TIME_LIMIT_S=str(FAST_TASK_TIME_LIMIT_S),
        CRSMON_SWEEP_INTERVAL_S=str(FAST_SWEEP_S),
        CRSMON_SWEEP_PENDING_AFTER_S=str(FAST_SWEEP_S),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def start_worker(
    owned: Processes, env: dict[str, str], *, via_cli: bool = False
) -> Proc:
    """A real prefork worker with one child, ready to consume.

    Started the documented way (``python -m celery -A workers.celery_app
    worker``), or through ``workers.cli worker`` (the future ``crsmon worker``).
    """
    name = f"test-{uuid.uuid4().hex[:8]}@%h"
    if via_cli:
        argv = [sys.executable, "-m", "workers.cli", "worker", "-c", "1", "-n", name]
    else:
        argv = [
            sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
            "--pool=prefork", "-c", "1", "--loglevel=INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", name,
        ]  # fmt: skip
    proc = owned.start("worker", argv, env)
    proc.wait_for_log(r"@\S+ ready\.", timeout=60)
    return proc


def start_beat(owned: Processes, env: dict[str, str], schedule: Path) -> Proc:
    """The sweeper's clock, started through ``workers.cli beat``."""
    argv = [
        sys.executable, "-m", "workers.cli", "beat",
        "--loglevel=INFO", f"--schedule={schedule}",
    ]  # fmt: skip
    proc = owned.start("beat", argv, env)
    proc.wait_for_log(r"beat: Starting", timeout=60)
    return proc


# ---------------------------------------------------------------- data


def patient_feed(pseudonym: str, extra_vitals: int = 0) -> list[str]:
    """One patient's bedside feed (enrolment first): fever, then hypotension."""
    infusion = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)

    def at(hours: float) -> str:
        return (infusion + timedelta(hours=hours)).isoformat()

    n = 0

    def record(kind: str, **fields: Any) -> str:
        nonlocal n
        n += 1
        key = {"source_system": "monitor", "source_record_id": f"{pseudonym}-{n}"}
        return json.dumps({"kind": kind, **key, "patient": pseudonym, **fields})

    lines = [
        json.dumps(
            {
                "kind": "patient",
                "source_system": "ehr",
                "source_record_id": f"{pseudonym}-enrol",
                "patient": pseudonym,
                "age_years": 9.0,
                "care_unit": "PICU",
                "infusion_at": at(0),
            }
        ),
        record(
            "vitals", observed_at=at(4), temperature_c=37.1, sbp_mmhg=104, dbp_mmhg=60
        ),
        record("oxygen", observed_at=at(4), device="room_air"),
        record(
            "vitals", observed_at=at(20), temperature_c=38.9, sbp_mmhg=100, dbp_mmhg=58
        ),
        record(
            "vitals", observed_at=at(26), temperature_c=39.4, sbp_mmhg=84, dbp_mmhg=40
        ),
        record("fluid_bolus", given_at=at(26), for_hypotension=True, volume_ml=400),
        record("treatment", given_at=at(30), drug="tocilizumab"),
        record(
            "vasopressor_start",
            started_at=at(32),
            drug="norepinephrine",
            dose=0.05,
            unit="ug/kg/min",
        ),
        record(
            "vitals", observed_at=at(33), temperature_c=37.2, sbp_mmhg=92, dbp_mmhg=50
        ),
    ]
    for i in range(extra_vitals):
        hours = 34 + i * 0.25
        lines.append(
            record(
                "vitals",
                observed_at=at(hours),
                temperature_c=37.0 + (i % 5) / 10,
                sbp_mmhg=95 + i % 7,
                dbp_mmhg=55,
            )
        )
    return lines


def ingest_all(sessions: sessionmaker[Session], lines: list[str]) -> set[int]:
    """Store every line (each its own committed transaction); touched patient ids."""
    touched: set[int] = set()
    now = datetime.now(UTC)
    for line_no, text in enumerate(lines, start=1):
        outcome = ingest_text(sessions, text, now=now, channel="test", line_no=line_no)
        assert outcome.status == "stored", outcome
        if outcome.patient_id is not None:
            touched.add(outcome.patient_id)
    return touched


GradeKey = tuple[str, datetime, str, int, str]
AlertKey = tuple[str, str, str, int | None]


@dataclass(frozen=True)
class Effects:
    """What grading left in a database, by natural key (pseudonym, not row id)."""

    grades: list[GradeKey]
    alerts: list[AlertKey]
    states: dict[str, int]
    attempts: dict[str, int]  # source_record_id -> attempts

    @staticmethod
    def read(sessions: sessionmaker[Session]) -> Effects:
        grade_q = select(
            Patient.pseudonym,
            Grade.evaluated_at,
            Grade.rule_set,
            Grade.grade,
            Grade.snapshot_hash,
        ).join(Patient, Patient.id == Grade.patient_id)
        alert_q = select(
            Patient.pseudonym, Alert.kind, Alert.dedup_key, Alert.grade
        ).join(Patient, Patient.id == Alert.patient_id)
        state_q = select(ClinicalRecord.grading_state, func.count()).group_by(
            ClinicalRecord.grading_state
        )
        attempt_q = select(ClinicalRecord.source_record_id, ClinicalRecord.attempts)
        with sessions() as session:
            grades: list[GradeKey] = [
                (p, at, rs, g, h) for p, at, rs, g, h in session.execute(grade_q)
            ]
            alerts: list[AlertKey] = [
                (p, kind, key, g) for p, kind, key, g in session.execute(alert_q)
            ]
            states: dict[str, int] = dict(session.execute(state_q).all())
            attempts: dict[str, int] = dict(session.execute(attempt_q).all())
        return Effects(sorted(grades), sorted(alerts), states, attempts)


def oracle(lines: list[str], tmp_path: Path) -> Effects:
    """The expected effects: the same feed graded in process on a fresh SQLite file."""
    url = f"sqlite:///{tmp_path / 'oracle.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        sessions = make_sessions(engine)
        touched = ingest_all(sessions, lines)
        rules = resolve_rule_set("astct-2019")
        InProcessDispatcher(sessions, rules, AlertPolicy()).notify(touched)
        return Effects.read(sessions)
    finally:
        engine.dispose()


def assert_no_duplicates(effects: Effects) -> None:
    """Every grade and alert natural key occurs once (no effect written twice)."""
    assert len(set(effects.grades)) == len(effects.grades)
    alert_keys = [(p, kind, key) for p, kind, key, _ in effects.alerts]
    assert len(set(alert_keys)) == len(alert_keys)
