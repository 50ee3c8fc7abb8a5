"""End-to-end figures on real processes, and their references in the same run.

- ``pipeline``: NDJSON batches over HTTP as fast as the stack takes them, for
  at least the set time, to ``crsmon serve`` -> PostgreSQL -> Celery on Redis
  -> ``crsmon worker`` -> grade rows and alerts in PostgreSQL. Throughput is
  counted from the database: observations whose grading committed, from the
  first request to the last grading commit, never from requests sent.
- ``latency``: a fixed offered load (observations per second, paced), with one
  fever per patient planted at a random moment; each ``crs_onset`` alert is
  timed from the send of its fever to when a reader first sees the alert
  committed (a poller at 20 ms).
- ``regrade``: ``crsmon regrade`` of the whole stored history under another
  rule-set setting (one audit event per run).
- references: the PostgreSQL insert rate of the same rows with ``executemany``,
  and the round-trip rate of a no-op Celery task on the same broker and worker.

An *observation* is one measured value (one stored clinical record row: a
vitals set of temperature, heart rate, systolic and diastolic pressure and
SpO2 is five). Records (feed lines) per second are reported beside it.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import redis
from psycopg.types.json import Jsonb

from crsmon.bench.services import (
    BenchError,
    Proc,
    Services,
    crsmon_argv,
    free_port,
    wait_until,
)

VALUES_PER_RECORD = 5
SOURCE = "bench"
RESENDS = 10
DRAIN_CAP_S = 600.0
"""However long the stack takes to grade what it accepted, the run ends."""


@dataclass
class Stack:
    """The API and worker processes on one database and broker."""

    env: dict[str, str]
    database_url: str
    broker_url: str
    api_url: str
    key: str
    api: Proc
    worker: Proc
    resent: int = 0
    """Batches answered 503 and sent again."""

    @property
    def libpq_url(self) -> str:
        return self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def start_stack(
    owned: Services, database_url: str, broker_url: str, *, concurrency: int
) -> Stack:
    """Migrate, make a bedside key, start the API and a worker; wait for both."""
    env = os.environ | {
        "CRSMON_DATABASE_URL": database_url,
        "CRSMON_BROKER_URL": broker_url,
        "CRSMON_RATE_LIMIT": "100000000/minute",  # raised for the benchmark
        "CRSMON_LOG_LEVEL": "WARNING",
    }
    for name in ("CRSMON_KEY_PEPPER", "CRSMON_MODE"):
        env.pop(name, None)
    subprocess.run(  # noqa: S603 - this interpreter's own crsmon
        crsmon_argv("db", "upgrade"), env=env, check=True, capture_output=True
    )
    made = subprocess.run(  # noqa: S603
        crsmon_argv(
            "keys", "create", "--name", "bench", "--role", "bedside", "--unit", "*"
        ),
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    key = made.stdout.strip().splitlines()[-1]
    port = free_port()
    api = owned.start("api", crsmon_argv("serve", "--port", str(port)), env)
    url = f"http://127.0.0.1:{port}"

    def api_up() -> bool:
        if not api.alive():
            raise BenchError(f"crsmon serve exited:\n{api.text()[-2000:]}")
        try:
            return httpx.get(f"{url}/health/live", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(api_up, 60, "crsmon serve")
    worker = owned.start(
        "worker",
        crsmon_argv("worker", "-c", str(concurrency), "--loglevel", "WARNING"),
        env,
    )
    stack = Stack(env, database_url, broker_url, url, key, api, worker)
    noop_round_trip(stack, 1, timeout=120)  # the worker consumes
    return stack


# ---------------------------------------------------------------- the feed


def _infusion(now: datetime) -> datetime:
    return (now - timedelta(days=3)).replace(microsecond=0)


def enrol(stack: Stack, prefix: str, patients: int, now: datetime) -> list[str]:
    """Enrol ``patients`` synthetic patients; their pseudonyms."""
    names = [f"{prefix}-{n:05d}" for n in range(patients)]
    lines = [
        json.dumps(
            {
                "kind": "patient",
                "source_system": SOURCE,
                "source_record_id": f"enrol-{name}",
                "patient": name,
                "age_years": 8.0 + (n % 10),
                "weight_kg": 30.0,
                "care_unit": "BENCH",
                "infusion_at": _infusion(now).isoformat(),
            }
        )
        for n, name in enumerate(names)
    ]
    with httpx.Client(timeout=120) as client:
        for start in range(0, len(lines), 1000):
            _post(client, stack, lines[start : start + 1000])
    return names


def vitals(
    patient: str, seq: int, infusion: datetime, *, fever: bool, rng: random.Random
) -> str:
    """One vitals set (five values) ``seq`` minutes into day 1 of the course."""
    at = infusion + timedelta(days=1, minutes=seq)
    return json.dumps(
        {
            "kind": "vitals",
            "source_system": SOURCE,
            "source_record_id": f"{patient}-v{seq}",
            "patient": patient,
            "observed_at": at.isoformat(),
            "temperature_c": 38.6 if fever else round(rng.uniform(36.4, 37.6), 1),
            "heart_rate_per_min": float(rng.randint(70, 130)),
            "sbp_mmhg": float(rng.randint(95, 125)),
            "dbp_mmhg": float(rng.randint(50, 75)),
            "spo2_pct": float(rng.randint(94, 100)),
        }
    )


def _post(client: httpx.Client, stack: Stack, lines: list[str]) -> dict[str, int]:
    """One NDJSON batch; a 503 is resent after its Retry-After, as a sender
    should (the records were not stored), and counted."""
    for _ in range(RESENDS):
        answer = client.post(
            f"{stack.api_url}/v1/records/batch",
            content=("\n".join(lines) + "\n").encode(),
            headers={
                "authorization": f"Bearer {stack.key}",
                "content-type": "application/x-ndjson",
            },
        )
        if answer.status_code != 503:
            break
        stack.resent += 1
        time.sleep(min(2.0, float(answer.headers.get("retry-after", "1"))))
    if answer.status_code != 200:
        raise BenchError(f"batch answered {answer.status_code}: {answer.text[:300]}")
    counts: dict[str, int] = answer.json()["counts"]
    if counts.get("refused") or counts.get("conflict"):
        raise BenchError(f"records refused by the intake: {counts}")
    return counts


# ---------------------------------------------------------------- database


def _scalar(stack: Stack, sql: str, *args: Any) -> Any:
    with psycopg.connect(stack.libpq_url) as conn:
        row = conn.execute(sql, args).fetchone()
        return None if row is None else row[0]


def any_pending(stack: Stack) -> bool:
    return bool(
        _scalar(
            stack,
            "SELECT EXISTS (SELECT FROM clinical_records "
            "WHERE grading_state = 'pending')",
        )
    )


def drain(stack: Stack) -> float:
    """Wait until nothing is pending; the seconds waited (to half a second).

    Polled twice a second, not faster: each poll is a new connection and a
    scan of the pending index, CPU taken from the workers it waits for; the
    figures are read from the commit times in the database, not from this.
    """
    return wait_until(
        lambda: not any_pending(stack), DRAIN_CAP_S, "grading to drain", every=0.5
    )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


# ---------------------------------------------------------------- pipeline


def bench_pipeline(
    stack: Stack,
    *,
    patients: int,
    seconds: float,
    batch_records: int = 1000,
    senders: int = 2,
    seed: int = 1,
) -> dict[str, Any]:
    """Sustained end-to-end throughput (see the module docstring)."""
    now = datetime.now(UTC)
    names = enrol(stack, "PIPE", patients, now)
    infusion = _infusion(now)
    counter = iter(range(10**9))
    lock = threading.Lock()
    accepted = [0]
    stop_at = [0.0]
    errors: list[BaseException] = []

    def sender(n: int) -> None:
        rng = random.Random(seed * 1000 + n)  # noqa: S311 - a synthetic feed
        try:
            with httpx.Client(timeout=300) as client:
                while time.monotonic() < stop_at[0]:
                    with lock:
                        block = [next(counter) for _ in range(batch_records)]
                    lines = [
                        vitals(
                            names[i % patients],
                            i // patients,
                            infusion,
                            fever=rng.random() < 0.02,
                            rng=rng,
                        )
                        for i in block
                    ]
                    counts = _post(client, stack, lines)
                    with lock:
                        accepted[0] += counts.get("stored", 0)
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    first_grade = int(_scalar(stack, "SELECT coalesce(max(id), 0) FROM grades"))
    wall_start = datetime.now(UTC)
    started = time.monotonic()
    stop_at[0] = started + seconds
    threads = [threading.Thread(target=sender, args=(n,)) for n in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise BenchError(f"a sender failed: {errors[0]!r}")
    sent_s = time.monotonic() - started
    drain(stack)
    with psycopg.connect(stack.libpq_url) as conn:
        graded, last = conn.execute(
            "SELECT count(*), max(graded_at) FROM clinical_records "
            "WHERE kind = 'measurement' AND recorded_at >= %s "
            "AND grading_state = 'graded'",
            (wall_start,),
        ).fetchone() or (0, None)
        grade_rows = conn.execute(
            "SELECT count(*) FROM grades WHERE id > %s", (first_grade,)
        ).fetchone()
    if not graded or last is None:
        raise BenchError("nothing was graded")
    elapsed = (last - wall_start).total_seconds()
    return {
        "patients": patients,
        "seconds_sending": sent_s,
        "records_accepted": accepted[0],
        "observations_graded": graded,
        "grade_rows": None if grade_rows is None else grade_rows[0],
        "seconds_to_last_grade": elapsed,
        "observations_per_s": graded / elapsed,
        "records_per_s": graded / VALUES_PER_RECORD / elapsed,
        "intake_observations_per_s": accepted[0] * VALUES_PER_RECORD / sent_s,
        "batch_records": batch_records,
        "senders": senders,
        "batches_resent_after_503": stack.resent,
    }


# ---------------------------------------------------------------- latency


def bench_latency(
    stack: Stack,
    *,
    patients: int,
    seconds: float,
    observations_per_s: float,
    seed: int = 2,
) -> dict[str, Any]:
    """Intake-to-alert-committed latency at a fixed offered load."""
    rng = random.Random(seed)  # noqa: S311 - a synthetic feed
    now = datetime.now(UTC)
    names = enrol(stack, "LAT", patients, now)
    infusion = _infusion(now)
    records_per_s = observations_per_s / VALUES_PER_RECORD
    tick_s = 0.1
    total = int(records_per_s * seconds)
    fever_at = {name: rng.randrange(total) for name in names}
    fever_index = {i: name for name, i in fever_at.items()}
    sent: dict[str, float] = {}
    seen: dict[int, float] = {}
    done = threading.Event()

    def poll() -> None:
        with psycopg.connect(stack.libpq_url, autocommit=True) as conn:
            while not done.is_set():
                rows = conn.execute(
                    "SELECT a.id, p.pseudonym FROM alerts a JOIN patients p "
                    "ON p.id = a.patient_id WHERE a.kind = 'crs_onset' "
                    "AND p.pseudonym LIKE 'LAT-%%'"
                ).fetchall()
                at = time.monotonic()
                for alert_id, patient in rows:
                    seen.setdefault(alert_id, at)
                    names_seen[alert_id] = patient
                time.sleep(0.02)

    names_seen: dict[int, str] = {}
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    started = time.monotonic()
    next_tick = started
    i = 0
    seq: dict[str, int] = dict.fromkeys(names, 0)  # each patient's own minutes
    with httpx.Client(timeout=60) as client:
        while i < total:
            n = max(1, round(records_per_s * tick_s))
            lines = []
            fevers = []
            for j in range(i, min(total, i + n)):
                name = fever_index.get(j)
                patient = name if name is not None else names[j % patients]
                seq[patient] += 1
                lines.append(
                    vitals(
                        patient, seq[patient], infusion, fever=name is not None, rng=rng
                    )
                )
                if name is not None:
                    fevers.append(name)
            at = time.monotonic()
            for name in fevers:
                sent[name] = at
            _post(client, stack, lines)
            i += len(lines)
            next_tick += tick_s
            time.sleep(max(0.0, next_tick - time.monotonic()))
    offered_s = time.monotonic() - started
    drain(stack)
    time.sleep(0.2)
    done.set()
    poller.join(timeout=5)
    latencies = [(seen[a] - sent[p]) * 1000 for a, p in names_seen.items() if p in sent]
    if not latencies:
        raise BenchError("no alert was seen")
    return {
        "offered_observations_per_s": total * VALUES_PER_RECORD / offered_s,
        "seconds": offered_s,
        "alerts_timed": len(latencies),
        "fevers_sent": len(sent),
        "p50_ms": _percentile(latencies, 50),
        "p95_ms": _percentile(latencies, 95),
        "p99_ms": _percentile(latencies, 99),
        "max_ms": max(latencies),
        "mean_ms": statistics.fmean(latencies),
    }


# ---------------------------------------------------------------- regrade


def bench_regrade(stack: Stack, rule_set: str, *, jobs: int = 1) -> dict[str, Any]:
    """``crsmon regrade --jobs`` of everything stored, timed (process start
    included); one audit event per run."""
    records = int(
        _scalar(
            stack, "SELECT count(*) FROM clinical_records WHERE kind = 'measurement'"
        )
    )
    before = int(
        _scalar(stack, "SELECT count(*) FROM audit_events WHERE action = 'regrade'")
    )
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603 - this interpreter's own crsmon
        crsmon_argv("regrade", "--rule-set", rule_set, "--jobs", str(jobs)),
        env=stack.env,
        capture_output=True,
        text=True,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise BenchError(f"crsmon regrade failed: {done.stderr[-1000:]}")
    after = int(
        _scalar(stack, "SELECT count(*) FROM audit_events WHERE action = 'regrade'")
    )
    return {
        "rule_set": rule_set,
        "jobs": jobs,
        "observations": records,
        "seconds": elapsed,
        "observations_per_s": records / elapsed,
        "audit_events": after - before,
        "said": done.stdout.strip().splitlines()[-1:],
    }


# ---------------------------------------------------------------- references


def bulk_insert_rate(stack: Stack, rows: int) -> dict[str, Any]:
    """PostgreSQL ``executemany`` of stored clinical record rows into a copy of
    the table (the same columns and types), as one transaction."""
    with psycopg.connect(stack.libpq_url) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'clinical_records' AND column_name <> 'id' "
                "ORDER BY ordinal_position"
            )
        ]
        names = ", ".join(columns)
        data = conn.execute(
            f"SELECT {names} FROM clinical_records "  # noqa: S608 - catalog names
            "WHERE kind = 'measurement' LIMIT %s",
            (rows,),
        ).fetchall()
        conn.execute(
            "CREATE TEMP TABLE bench_copy (LIKE clinical_records INCLUDING ALL)"
        )
        marks = ", ".join(["%s"] * len(columns))
        suffix = [
            tuple(
                f"{v}-copy"
                if c == "source_record_id"
                else Jsonb(v)
                if isinstance(v, dict | list)
                else v
                for c, v in zip(columns, row, strict=True)
            )
            for row in data
        ]
        started = time.monotonic()
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO bench_copy ({names}) VALUES ({marks})",  # noqa: S608
                suffix,
            )
        conn.commit()
        elapsed = time.monotonic() - started
    return {
        "rows": len(suffix),
        "seconds": elapsed,
        "rows_per_s": len(suffix) / elapsed,
        "what": "psycopg executemany INSERT of stored clinical_records rows "
        "into a copy of the table, one transaction",
    }


def noop_round_trip(stack: Stack, tasks: int, *, timeout: float = 300) -> float:
    """Publish ``tasks`` no-op tasks and wait until the worker has acked them
    all; tasks per second."""
    from crsmon.settings import Settings
    from workers.celery_app import NOOP_TASK, QUEUE, make_celery

    settings = Settings(database_url=stack.database_url, broker_url=stack.broker_url)
    app = make_celery(settings)
    client = redis.Redis.from_url(stack.broker_url, socket_timeout=5)
    task = app.tasks[NOOP_TASK]
    started = time.monotonic()
    with app.producer_or_acquire() as producer:
        for _ in range(tasks):
            task.apply_async(producer=producer)

    def drained() -> bool:
        return client.llen(QUEUE) == 0 and client.hlen("unacked") == 0

    wait_until(drained, timeout, "the no-op tasks")
    elapsed = time.monotonic() - started
    client.close()
    return tasks / elapsed
