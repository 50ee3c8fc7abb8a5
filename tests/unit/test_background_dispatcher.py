"""Unit: the publisher thread between intake and the broker never makes the
caller wait, gathers repeated notifications, survives a failing send and
hands everything on when closed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import pytest

from crsmon.services.dispatch import BackgroundDispatcher

HANG_S = 10.0
"""A bound that catches a hang, not a speed target."""


class Blocking:
    """A dispatcher whose sends wait until released (a paused broker)."""

    def __init__(self, fail_first: bool = False) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.sent: list[set[int]] = []
        self.fail_first = fail_first

    def notify(self, patient_ids: Iterable[int]) -> None:
        self.entered.set()
        self.release.wait(HANG_S)
        if self.fail_first:
            self.fail_first = False
            raise ConnectionError("broker gone")
        self.sent.append(set(patient_ids))


def test_notify_returns_while_the_send_is_stuck_and_gathers_patients() -> None:
    inner = Blocking()
    dispatcher = BackgroundDispatcher(inner)
    started = time.monotonic()
    dispatcher.notify([1, 2])
    assert inner.entered.wait(HANG_S)  # the thread waits inside the first send
    for _ in range(100):
        dispatcher.notify([3, 3, 4])
    assert time.monotonic() - started < HANG_S / 2  # nothing waited for the send
    assert not dispatcher.flush(0.01)
    inner.release.set()
    assert dispatcher.flush(HANG_S)
    assert inner.sent == [{1, 2}, {3, 4}]  # a hundred notifications, one batch
    dispatcher.close()


def test_a_failed_send_is_survived_and_later_notifications_go_on() -> None:
    inner = Blocking(fail_first=True)
    inner.release.set()
    dispatcher = BackgroundDispatcher(inner)
    dispatcher.notify([7])
    assert dispatcher.flush(HANG_S)
    assert inner.sent == []  # lost: the sweeper re-finds the pending records
    dispatcher.notify([8])
    assert dispatcher.flush(HANG_S)
    assert inner.sent == [{8}]
    dispatcher.close()


def test_close_hands_on_what_is_queued_and_stops() -> None:
    inner = Blocking()
    dispatcher = BackgroundDispatcher(inner)
    dispatcher.notify([5])
    dispatcher.notify([])  # nothing new: no wake-up
    inner.release.set()
    dispatcher.close(HANG_S)
    assert inner.sent == [{5}]
    assert not dispatcher._thread.is_alive()


@pytest.mark.parametrize("ids", [[], [1], list(range(1000))])
def test_everything_notified_is_sent_once(ids: list[int]) -> None:
    inner = Blocking()
    inner.release.set()
    dispatcher = BackgroundDispatcher(inner)
    for n in ids:
        dispatcher.notify([n])
    assert dispatcher.flush(HANG_S)
    dispatcher.close()
    sent = [n for batch in inner.sent for n in batch]
    assert sorted(sent) == ids


class Raising:
    """A send that raises what no ``except Exception`` catches."""

    def __init__(self) -> None:
        self.calls = 0

    def notify(self, patient_ids: Iterable[int]) -> None:
        del patient_ids
        self.calls += 1
        raise KeyboardInterrupt


def test_the_thread_outlives_any_send_and_a_late_notify_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = Raising()
    dispatcher = BackgroundDispatcher(inner)
    dispatcher.notify([1])
    assert dispatcher.flush(HANG_S)
    dispatcher.notify([2])
    assert dispatcher.flush(HANG_S)
    assert (inner.calls, dispatcher.failures) == (2, 2)
    assert dispatcher._thread.is_alive()
    dispatcher.close(HANG_S)
    dispatcher.notify([3])
    assert "after shutdown" in caplog.text


def test_a_forked_child_starts_its_own_thread() -> None:
    """As after a fork: another pid finds no thread of its own and starts one."""
    inner = Blocking()
    inner.release.set()
    dispatcher = BackgroundDispatcher(inner)
    before = dispatcher._thread
    dispatcher._pid = -1  # what a child sees: the parent's pid
    dispatcher.notify([9])
    assert dispatcher._thread is not before
    assert dispatcher.flush(HANG_S)
    assert inner.sent == [{9}]
    dispatcher.close()
