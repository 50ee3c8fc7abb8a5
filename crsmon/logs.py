"""Structured logs that carry ids, never names, record numbers or values.

One JSON object per line, built from an allowlist: the time, level, logger,
the message, and only the extra fields named in :data:`FIELDS` (ids, route
templates, statuses, durations, counts, exception classes). Three rules keep
protected health information out (reliability.md §3.5, OWASP Logging):

- messages are constant texts; what varies goes into allowlisted fields, and
  any other ``extra`` a caller passes is dropped; a message argument is kept
  only if it is a number, an exception class name or a dotted/node name
  (``workers.tasks.grade``, ``celery@host``), else the template is logged
  with its arguments withheld;
- exceptions (logged, or passed as message arguments) are reduced to their
  class and the code locations of their traceback, never their message (a
  validation or driver message can quote the value that failed) and never
  local variables;
- the API's access log names the route template (``/v1/patients/{pseudonym}``)
  and the request and key ids, never the concrete path or its query string.

``configure_logging`` installs this on the root logger for ``crsmon serve``
and the workers; libraries keep logging through it.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from datetime import UTC, datetime
from typing import Any

FIELDS = (
    "request_id",
    "key_id",
    "role",
    "method",
    "route",
    "status",
    "duration_ms",
    "patient_id",
    "record_ids",
    "task",
    "task_id",
    "count",
    "error_class",
)
"""The only ``extra`` fields a log line may carry."""
MAX_MESSAGE = 300


def _frames(exc: BaseException) -> list[str]:
    """Where an exception passed, as ``file:line function``, without values."""
    return [
        f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)
    ]


class JsonFormatter(logging.Formatter):
    """One JSON object per record, from the allowlist only."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record)[:MAX_MESSAGE],
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error_class"] = _class_of(exc)
            line["traceback"] = _frames(exc)
        return json.dumps(line, default=str)


def _message(record: logging.LogRecord) -> str:
    """The message with its arguments, unless an argument could carry a value.

    crsmon's own messages pass only exception classes, counts and ids as
    arguments. A library message with string arguments (a driver error, a
    task's repr) is kept as its constant template.
    """
    if not record.args:
        return str(record.msg)
    args = record.args if isinstance(record.args, tuple) else (record.args,)
    args = tuple(_class_of(a) if _is_exception(a) else a for a in args)
    if all(_safe(a) for a in args):
        try:
            return str(record.msg) % args
        except (TypeError, ValueError):
            return f"{record.msg} (arguments withheld)"
    return f"{record.msg} (arguments withheld)"


def _is_exception(value: object) -> bool:
    return isinstance(value, BaseException) or hasattr(value, "exc")


def _class_of(value: object) -> str:
    """An exception's class name (Celery wraps them: the wrapped one's)."""
    inner = getattr(value, "exc", value)
    return type(inner if isinstance(inner, BaseException) else value).__name__


_NAME = re.compile(r"^[A-Za-z0-9_\-]+([.@][A-Za-z0-9_\-]+)+$")
"""A dotted or ``@`` name: a module or task path, a node name (celery@host)."""


def _safe(value: object) -> bool:
    """Numbers, exception class names, dotted/node names; never free text."""
    if isinstance(value, int | float | bool):
        return True
    return _is_class_name(value) or (
        isinstance(value, str) and len(value) <= 120 and bool(_NAME.match(value))
    )


_CLASS_ENDINGS = ("Error", "Exception", "Exit", "Interrupt", "Timeout", "Warning")


def _is_class_name(value: object) -> bool:
    """An exception class name (what crsmon's own messages pass), nothing else."""
    return (
        isinstance(value, str)
        and value.isidentifier()
        and value[:1].isupper()
        and value.endswith(_CLASS_ENDINGS)
    )


def configure_logging(level: str = "INFO") -> None:
    """Route every logger through one JSON handler on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


def format_handlers(logger: logging.Logger) -> None:
    """Give the handlers a library set up (Celery's) the JSON formatter."""
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())
