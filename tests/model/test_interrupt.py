"""Tests of lesionflow.model.interrupt: stop signals are recorded, then raised between batches."""

import os
import signal

import pytest

from lesionflow.model.interrupt import StopSignals, TrainingInterrupted, exit_on_interrupt


def test_interrupted_main_exits_with_128_plus_the_signal_number():
    @exit_on_interrupt
    def main():
        raise TrainingInterrupted(signal.SIGTERM, epoch=3)

    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 143


def test_a_stop_signal_is_recorded_and_raised_only_at_the_next_check(capfd):
    previous = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as signals:
        signals.check(2)  # nothing received yet
        os.kill(os.getpid(), signal.SIGUSR1)
        assert signals.received == signal.SIGUSR1
        with pytest.raises(TrainingInterrupted) as stopped:
            signals.check(2)
    assert stopped.value.epoch == 2 and stopped.value.exit_code == 128 + signal.SIGUSR1
    assert "received SIGUSR1: checkpoint of epoch 2 kept" in capfd.readouterr().err
    # Leaving the block puts the previous handlers back.
    assert signal.getsignal(signal.SIGUSR1) == previous
