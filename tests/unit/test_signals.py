"""SIGINT, SIGTERM and SIGHUP raised as an interrupt in the CLI's main thread, once, and the old handlers put back."""

from __future__ import annotations

import os
import signal

import pytest

from gpuprobe.cli.signals import SignalsAsInterrupts
from gpuprobe.errors import interrupt_reason


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_is_an_interrupt_naming_it_and_a_second_one_is_ignored(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    guard = SignalsAsInterrupts()
    with pytest.raises(KeyboardInterrupt) as info, guard:
        os.kill(os.getpid(), sig)
    assert guard.received == sig and guard.name == sig.name
    assert interrupt_reason(info.value) == f"stopped by {sig.name}"
    assert signal.getsignal(sig) == before  # put back on the way out


def test_a_second_signal_while_saving_does_not_interrupt_the_save() -> None:
    guard = SignalsAsInterrupts()
    saved = False
    with pytest.raises(KeyboardInterrupt), guard:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the save path is hit again
            saved = True
    assert saved


def test_ctrl_c_reads_as_the_user() -> None:
    assert interrupt_reason(KeyboardInterrupt()) == "interrupted by the user"


def test_sigint_is_handled_like_the_others_and_a_second_one_is_ignored() -> None:
    """Ctrl-C twice: the first is the interrupt (read as the user's), the second does not cut the save short."""
    guard = SignalsAsInterrupts()
    saved = False
    with pytest.raises(KeyboardInterrupt) as info, guard:
        try:
            os.kill(os.getpid(), signal.SIGINT)
        finally:
            os.kill(os.getpid(), signal.SIGINT)
            saved = True
    assert saved and guard.name == "SIGINT"
    assert interrupt_reason(info.value) == "interrupted by the user"
