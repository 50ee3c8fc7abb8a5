"""The MLLP listener: HL7 v2 over TCP, each message answered with its ACK.

python-hl7's asyncio MLLP server frames the blocks (``0x0b ... 0x1c 0x0d``);
each message is handled in a worker thread (the database work is
synchronous), in arrival order per connection, and answered AA, AE or AR as
interface engines expect. Binds to loopback by default; only the configured
sending facilities are taken. Stored records are graded by the same
dispatcher as the API (in process, or Celery with a broker).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import hl7.mllp
from sqlalchemy.orm import Session, sessionmaker

from crsmon.services.dispatch import Dispatcher
from crsmon.services.interfaces import Hl7Answer, receive_hl7

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1 << 20
"""A block over 1 MiB closes the connection (a message is never that large)."""


def decode(block: bytes) -> str:
    """UTF-8, else ISO 8859-1 (HL7 v2's usual default): never an exception."""
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError:
        return block.decode("latin-1")


def handle_message(
    sessions: sessionmaker[Session],
    dispatcher: Dispatcher,
    text: str,
    *,
    facilities: frozenset[str],
    pepper: str,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Hl7Answer:
    """Store one message's OBX and tell the grader; the answer to send."""
    answer = receive_hl7(
        sessions, text, facilities=facilities, pepper=pepper, now=clock()
    )
    touched = {
        o.patient_id
        for r in answer.receipts
        for o in r.outcomes
        if o.status == "stored" and o.patient_id is not None
    }
    if touched:
        try:
            dispatcher.notify(touched)
        except Exception:
            logger.exception("grading notification failed; records stay pending")
    logger.info("hl7 message answered", extra={"ack": answer.code})
    return answer


async def serve(
    sessions: sessionmaker[Session],
    dispatcher: Dispatcher,
    *,
    host: str,
    port: int,
    facilities: frozenset[str],
    pepper: str,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Listen until cancelled; ``ready`` gets the bound port."""

    async def client(reader: Any, writer: Any) -> None:
        try:
            while not writer.is_closing():
                block = await reader.readblock()
                answer = await asyncio.to_thread(
                    handle_message,
                    sessions,
                    dispatcher,
                    decode(block),
                    facilities=facilities,
                    pepper=pepper,
                )
                writer.writeblock(answer.ack.encode("utf-8"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the sender closed the connection
        except (ValueError, hl7.mllp.InvalidBlockError):
            logger.warning("mllp: unframed or oversized block; connection closed")
        finally:
            writer.close()

    server = await hl7.mllp.start_hl7_server(
        client, host, port, limit=MAX_MESSAGE_BYTES
    )
    async with server:
        if ready is not None:
            ready(server.sockets[0].getsockname()[1])
        await server.serve_forever()
