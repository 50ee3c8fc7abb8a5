"""HL7 v2 ORU^R01 messages built for the tests, as monitors and interface
engines send them (IHE PCD-01 shape: MSH, PID, OBR, OBX...)."""

from __future__ import annotations

import socket
from datetime import datetime

FACILITY = "PICU-MON"
MRN = "MRN-4711"


def dtm(when: datetime) -> str:
    """An HL7 DTM with seconds and its UTC offset."""
    return when.strftime("%Y%m%d%H%M%S%z")


def obx(
    n: int,
    code: str,
    value: str,
    unit: str,
    when: str,
    *,
    status: str = "F",
    kind: str = "NM",
) -> str:
    """One OBX: ``code`` as ``id^text^system``, ``unit`` likewise (or UCUM)."""
    return f"OBX|{n}|{kind}|{code}|1|{value}|{unit}|||||{status}|||{when}"


def oru(
    control_id: str,
    *observations: str,
    facility: str = FACILITY,
    mrn: str = MRN,
    sent: str = "20260101000000+0000",
    kind: str = "ORU^R01",
) -> str:
    """An ORU^R01 (segments joined by CR, as the standard says)."""
    segments = [
        f"MSH|^~\\&|MONITOR|{facility}|CRSMON|HOSP|{sent}||{kind}|{control_id}|P|2.6",
        f"PID|||{mrn}^^^HOSP^MR||Doe^Jane",
        "OBR|1|||VITALS",
        *observations,
    ]
    return "\r".join(segments) + "\r"


TEMP_F = "150344^MDC_TEMP^MDC"
SPO2 = "150456^MDC_PULS_OXIM_SAT_O2^MDC"
NIBP_SYS = "150021^MDC_PRESS_BLD_NONINV_SYS^MDC"
NIBP_DIA = "150022^MDC_PRESS_BLD_NONINV_DIA^MDC"
HR = "147842^MDC_ECG_HEART_RATE^MDC"
FLOW = "3151-8^Inhaled oxygen flow rate^LN"
DEVICE = "107117-4^Method of oxygen delivery^LN"
FAHR = "266560^MDC_DIM_FAHR^MDC"
PERCENT = "262688^MDC_DIM_PERCENT^MDC"
MMHG = "266016^MDC_DIM_MMHG^MDC"
BPM = "264864^MDC_DIM_BEAT_PER_MIN^MDC"
L_MIN = "L/min^liters per minute^UCUM"


def mllp_send(port: int, message: str, timeout: float = 20.0) -> str:
    """Send one message framed by MLLP and return the ACK (as an engine does)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"\x0b" + message.encode("utf-8") + b"\x1c\r")
        data = b""
        while not data.endswith(b"\x1c\r"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.strip(b"\x0b\x1c\r").decode("utf-8")


def msa(ack: str) -> list[str]:
    """The MSA segment's fields: code, control id, reason."""
    line = next(s for s in ack.replace("\n", "\r").split("\r") if s.startswith("MSA"))
    return line.split("|")[1:]
