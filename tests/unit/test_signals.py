"""The CLI's signal handling: SIGINT, SIGTERM and SIGHUP become one clean stop."""

from __future__ import annotations

import os
import signal
import time

import pytest

from poisonlab.cli import Interrupted, _stop_cleanly_on_signals

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")


def _deliver(sig: int) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.5)  # the handler runs in the main thread at the next bytecode


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_termination_signals_raise_interrupted_and_handlers_are_restored(sig: int):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(Interrupted) as e, _stop_cleanly_on_signals() as got:
        _deliver(sig)
    assert e.value.signum == sig and got == [sig]
    assert isinstance(e.value, KeyboardInterrupt)  # every cleanup path handles it
    assert {s: signal.getsignal(s) for s in before} == before


def test_sigint_raises_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt) as e, _stop_cleanly_on_signals() as got:
        _deliver(signal.SIGINT)
    assert not isinstance(e.value, Interrupted) and got == [signal.SIGINT]


def test_a_second_signal_does_not_cut_the_cleanup_short():
    cleaned = False
    with _stop_cleanly_on_signals() as got:
        with pytest.raises(KeyboardInterrupt):
            _deliver(signal.SIGINT)
        _deliver(signal.SIGTERM)  # while stopping workers: ignored
        _deliver(signal.SIGINT)
        cleaned = True
    assert cleaned and got == [signal.SIGINT]
