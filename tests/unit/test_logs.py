"""The structured log format: allowlisted fields, no values, no exception text."""

from __future__ import annotations

import json
import logging

import pytest

from crsmon.logs import JsonFormatter, configure_logging

CANARY = "ZZCANARY8841"


def _line(record: logging.LogRecord) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(JsonFormatter().format(record))
    return parsed


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "crsmon.test", logging.WARNING, "f.py", 1, msg, args, None
    )
    record.__dict__.update(extra)
    return record


def test_only_allowlisted_fields_are_written() -> None:
    line = _line(_record("graded", patient_id=7, mrn=CANARY, task="grade"))
    assert line["patient_id"] == 7
    assert line["task"] == "grade"
    assert "mrn" not in line
    assert CANARY not in json.dumps(line)
    assert set(line) >= {"ts", "level", "logger", "message"}


@pytest.mark.parametrize(
    ("args", "kept"),
    [
        ((3, 0.5), True),
        (("OperationalError",), True),
        (("celery@node-1",), True),
        (("workers.tasks.grade_patient",), True),
        ((CANARY,), False),
        (("Canaryname Testpatient",), False),
        (("P-0001",), False),
        (({"return_value": CANARY},), False),
    ],
)
def test_message_arguments_are_kept_only_when_they_cannot_be_values(
    args: tuple[object, ...], kept: bool
) -> None:
    message = str(_line(_record("x %s" * len(args), *args))["message"])
    assert ("withheld" not in message) is kept
    assert CANARY not in message
    assert "Canaryname" not in message


def test_exceptions_are_logged_by_class_and_location_never_message() -> None:
    try:
        raise ValueError(f"temperature {CANARY} out of range")
    except ValueError:
        record = logging.LogRecord(
            "crsmon.test", logging.ERROR, "f.py", 1, "failed", (), None
        )
        import sys

        record.exc_info = sys.exc_info()
    line = _line(record)
    assert line["error_class"] == "ValueError"
    assert CANARY not in json.dumps(line)
    traceback = line["traceback"]
    assert isinstance(traceback, list)
    assert "test_logs.py" in traceback[0]


def test_configure_logging_routes_every_logger_through_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("INFO")
        logging.getLogger("uvicorn.error").info("started %s", CANARY)
        err = capsys.readouterr().err
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    line = json.loads(err.strip().splitlines()[-1])
    assert line["logger"] == "uvicorn.error"
    assert CANARY not in err


def test_an_exception_argument_is_reduced_to_its_class() -> None:
    class Wrapped:  # how Celery passes a worker's exception (ExceptionWithTraceback)
        exc = LookupError(CANARY)

    line = _line(_record("Task handler raised error: %r", Wrapped()))
    assert line["message"] == "Task handler raised error: 'LookupError'"
    line = _line(_record("failed: %s", ValueError(CANARY)))
    assert line["message"] == "failed: ValueError"
