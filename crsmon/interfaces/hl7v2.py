"""HL7 v2 ORU^R01 in, ACK out: read with the maintained python-hl7 parser.

Each OBX becomes an :class:`~crsmon.interfaces.readings.Item` (one value each;
an oxygen flow is paired with a device sent in the same message at the same
time). Rules (peers.md §2.3, grading.md §4):

- line endings are normalized first (CR, LF and CRLF all read: files and
  interface engines differ);
- OBX-3 carries LOINC (``LN``) or IEEE 11073 MDC codes (``MDC``, or an MDC
  reference-id name); OBX-6 the unit as UCUM or an MDC_DIM_* name; OBX-5 the
  value (NM; a repetition, a range or text in a numeric slot is refused,
  never guessed; the device OBX is text (ST/CWE/CE));
- OBX-11: F final and C corrected are graded (C replaces the earlier value
  of the same observation); P preliminary, R and S are kept, not graded; X
  (cannot be obtained) is kept as absent; D and W retract;
- OBX-14 (else OBR-7) is the time and must carry its UTC offset; a date
  without a time is kept, not graded;
- the patient is PID-3 (each repetition ``authority|id``), linked by the site.

An OBX's identity is a keyed hash (the service's pepper) of the sending
facility, the linked patient, the code, the sub-id and the time in UTC (no
identifier is stored in clear, and none can be recovered by guessing), so a
corrected result replaces the one it corrects whatever PID-3 repetitions or
time format it comes with. Two OBX of one patient with the same code, sub-id
and time in one message are refused (one would silently replace the other).

Pure: functions of their arguments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import hl7

from crsmon.interfaces.codes import (
    LOINC,
    MDC,
    MDC_NAMES,
    MDC_UNITS,
    UNIT_ALIASES,
    UNITS,
    Concept,
    device_for,
)
from crsmon.interfaces.readings import Item, Value, convert, pair_devices

GRADED = frozenset({"F", "C"})
HELD = frozenset({"P", "R", "S"})
RETRACTING = frozenset({"D", "W"})
ABSENT = "X"
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_DTM = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2}(\.\d{1,4})?)?([+-]\d{4})?$"
)
_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,24}$")


def _shown(code: str) -> str:
    return code if _SAFE.match(code) else "not shown"


class Hl7Error(ValueError):
    """A message crsmon cannot take at all (answered AR)."""


@dataclass(slots=True)
class Message:
    """One ORU^R01, read: who sent it, and each OBX as an item with the
    references of the patient (PID) whose group it is in."""

    control_id: str
    facility: str
    items: list[Item] = field(default_factory=list)
    refs: list[list[tuple[str, str]]] = field(default_factory=list)
    """``refs[n]``: the PID-3 references of ``items[n]``'s patient."""
    parsed: Any = None


def normalize(text: str) -> str:
    """Segments end with CR, whatever the file or socket used."""
    return text.replace("\r\n", "\r").replace("\n", "\r").strip("\r") + "\r"


def split_messages(text: str) -> list[str]:
    """The messages of a file (each starts with MSH)."""
    segments = normalize(text).split("\r")
    messages: list[list[str]] = []
    for segment in segments:
        if not segment.strip():
            continue
        if segment.startswith("MSH") or not messages:
            messages.append([])
        messages[-1].append(segment)
    return ["\r".join(m) + "\r" for m in messages]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _component(field_value: Any, n: int) -> str:
    """Component ``n`` (1-based) of a field's first repetition, as text (a
    field without components is its own first component)."""
    if not field_value:
        return ""
    first = field_value[0]
    if isinstance(first, str):
        return first if n == 1 else ""
    return _text(first[n - 1]) if len(first) >= n else ""


def _field(segment: Any, n: int) -> Any:
    try:
        return segment[n]
    except IndexError:
        return ""


def _time(item: Item, raw: str, element: str) -> None:
    match = _DTM.match(raw)
    if not raw or match is None:
        item.note(
            "error", "no-time", element, "a time (YYYYMMDDHHMM[SS]+ZZZZ) is required"
        )
        return
    if match.group(4) is None:
        item.precision = "day" if match.group(3) else "month-or-year"
        if match.group(3):
            item.at = datetime(
                int(match.group(1)),
                int(match.group(2)),
                int(match.group(3)),
                tzinfo=UTC,
            )
        item.hold(
            "date-only",
            element,
            "a date without a time of day is kept, not used for hourly grading",
        )
        return
    if match.group(8) is None:
        item.note(
            "error",
            "no-offset",
            element,
            "a time without its UTC offset is ambiguous: refused, never assumed",
        )
        return
    try:
        item.at = hl7.parse_datetime(raw).astimezone(UTC)
    except ValueError:
        item.note("error", "no-time", element, "not a valid time")


def _concept(obx: Any) -> tuple[Concept | None, str]:
    code = _component(_field(obx, 3), 1)
    text = _component(_field(obx, 3), 2)
    system = _component(_field(obx, 3), 3).upper()
    if system == "LN":
        return LOINC.get(code), code
    mdc = code if code in MDC else MDC_NAMES.get(code) or MDC_NAMES.get(text)
    if mdc is not None and system in ("MDC", "", "99MDC"):
        return MDC.get(mdc), code
    return LOINC.get(code) if system == "" else None, code


def _unit(obx: Any) -> str:
    """OBX-6 as UCUM: an MDC_DIM_* name in any component, else the code."""
    unit = _field(obx, 6)
    parts = [_component(unit, n) for n in (1, 2, 3)]
    for part in parts:
        if part in MDC_UNITS:
            return MDC_UNITS[part]
    return UNIT_ALIASES.get(parts[0], parts[0])


def read_obx(obx: Any, fallback_time: str) -> Item:
    """One OBX, read. Its identity is left to the service, which keys it
    (``key_parts``: code, sub-id and the time in UTC) with the patient."""
    n = _text(_field(obx, 1)) or "?"
    status = _text(_field(obx, 11)).upper()
    concept, code = _concept(obx)
    sub_id = _text(_field(obx, 4))
    raw_time = _text(_field(obx, 14)) or fallback_time
    item = Item("OBX", None, status or None)
    element = f"OBX[{n}]"
    if status in RETRACTING:
        item.action = "retract"
    elif status in HELD:
        item.hold("status-not-graded", f"{element}-11", "not final: kept, not graded")
    elif status not in GRADED and status != ABSENT:
        item.note("error", "status", f"{element}-11", "F, C, P, R, S, X, D or W")
    _time(item, raw_time, f"{element}-14")
    when = raw_time if item.at is None else item.at.isoformat()
    item.key_parts = (code, sub_id, when)
    if concept is None or concept == "bp_panel":
        item.hold(
            "code-unmapped",
            f"{element}-3",
            f"a code crsmon does not use ({_shown(code)}): kept, reported, not graded",
        )
        return item
    value_text = _text(_field(obx, 5))
    if status == ABSENT or (not value_text and item.action != "retract"):
        item.values.append(Value(concept, f"{element}-5", absent_reason="X"))
        item.hold(
            "absent",
            f"{element}-5",
            f"{concept} could not be obtained: stored as absent, never as a value",
        )
        return item
    if item.action == "retract":
        return item
    if concept == "device":
        device = device_for(value_text) or device_for(_component(_field(obx, 5), 2))
        if device is None:
            item.note(
                "error",
                "device-unmapped",
                f"{element}-5",
                "an oxygen delivery device crsmon's mapping table does not name: "
                "refused, never guessed",
            )
        else:
            item.values.append(Value("device", f"{element}-5", device=device))
        return item
    if not _NUMBER.match(value_text):
        item.note(
            "error",
            "value",
            f"{element}-5",
            "not one number (a repetition, range or text in a numeric result): "
            "refused, never guessed",
        )
        return item
    unit = _unit(obx)
    sent = float(value_text)
    value = convert(concept, sent, unit) if unit else None
    if value is None:
        accepted = ", ".join(UNITS.get(concept) or ())
        item.note(
            "error",
            "unit",
            f"{element}-6",
            f"not a unit crsmon accepts for {concept} (accepted: {accepted}); "
            "refused, never assumed",
        )
        return item
    item.values.append(Value(concept, f"{element}-5", value, sent, unit))
    return item


def patient_refs(pid: Any) -> list[tuple[str, str]]:
    """PID-3 repetitions as ``("identifier", "authority|id")``."""
    refs = []
    for repetition in _field(pid, 3) or []:
        if isinstance(repetition, str):
            ident, authority = repetition, ""
        else:
            ident = _text(repetition[0]) if len(repetition) > 0 else ""
            authority = _text(repetition[3]) if len(repetition) > 3 else ""
        if ident:
            refs.append(("identifier", f"{authority}|{ident}"))
    return refs


def read_message(text: str) -> Message:
    """One ORU^R01 message, read (each OBX an item of the patient whose PID
    group it is in; a message may report several patients).

    Raises:
        Hl7Error: not HL7 v2, not ORU^R01, or without MSH-10 or PID.
    """
    try:
        parsed = hl7.parse(normalize(text))
        msh = parsed.segment("MSH")
    except (hl7.ParseException, KeyError, IndexError, ValueError):
        raise Hl7Error("MSH: not an HL7 v2 message") from None
    kind = f"{_component(_field(msh, 9), 1)}^{_component(_field(msh, 9), 2)}"
    control_id = _text(_field(msh, 10))
    if kind != "ORU^R01":
        raise Hl7Error("MSH-9: only ORU^R01 is taken")
    if not control_id:
        raise Hl7Error("MSH-10: a message control id is required")
    facility = _component(_field(msh, 4), 1)
    message = Message(control_id, facility, parsed=parsed)
    refs: list[tuple[str, str]] | None = None
    fallback = ""
    groups: list[list[int]] = []
    for segment in parsed:
        name = _text(segment[0])
        if name == "PID":
            refs = patient_refs(segment)
            groups.append([])
            fallback = ""
        elif name == "OBR":
            fallback = _text(_field(segment, 7))
        elif name == "OBX":
            if refs is None:
                raise Hl7Error("PID: the patient is required before the OBX")
            groups[-1].append(len(message.items))
            message.items.append(read_obx(segment, fallback))
            message.refs.append(refs)
    if refs is None:
        raise Hl7Error("PID: the patient is required")
    for group in groups:
        items = [message.items[i] for i in group]
        _refuse_repeats(items)
        pair_devices([(message.items[i], message.refs[i]) for i in group])
    return message


def _refuse_repeats(items: list[Item]) -> None:
    """Two OBX of one patient with the same code, sub-id and time cannot be
    told apart (one would silently replace the other): the later is refused."""
    seen: set[tuple[str, ...]] = set()
    for item in items:
        if not item.key_parts or item.key_parts[0] == "":
            continue
        if item.key_parts in seen:
            item.note(
                "error",
                "repeated-obx",
                "OBX-4",
                "another OBX of this patient in this message has the same code, "
                "sub-id and time: give each its own OBX-4 sub-id",
            )
        seen.add(item.key_parts)


def ack(text: str, code: str, reason: str | None, now: datetime) -> str:
    """The ACK of a message (``AA``, ``AE`` or ``AR``), MSA-3 giving the reason."""
    try:
        parsed = hl7.parse(normalize(text))
        answer = str(parsed.create_ack(code, application="CRSMON", facility="CRSMON"))
        escape = parsed.escape
    except Exception:
        stamp = now.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")
        answer = f"MSH|^~\\&|CRSMON|CRSMON|||{stamp}||ACK|CRSMON|P|2.5\rMSA|{code}|\r"
        escape = None
    if reason:
        safe = (
            escape(reason)
            if escape is not None
            else re.sub(r"[|^~\\&\r\n]", " ", reason)
        )
        segments = answer.strip("\r").split("\r")
        for n, segment in enumerate(segments):
            if segment.startswith("MSA"):
                fields = segment.split("|")
                fields += [""] * (4 - len(fields))
                fields[3] = safe[:200]  # MSA-3, whatever MSA-2 holds
                segments[n] = "|".join(fields)
        answer = "\r".join(segments) + "\r"
    return answer
