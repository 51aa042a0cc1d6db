"""Wrong API keys counted per client address (agent/master/guesses.py), on Trio's MockClock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from agent.master import guesses
from agent.master.guesses import LOCKOUT_S, WINDOW_S, WRONG_KEYS, KeyGuesses


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_the_last_wrong_key_of_a_window_locks_the_address_out_for_a_while(clock: trio.testing.MockClock) -> None:
    counted = KeyGuesses()
    for _ in range(WRONG_KEYS - 1):
        counted.wrong("10.0.0.1")
    assert counted.locked_for("10.0.0.1") == 0
    counted.wrong("10.0.0.1")
    assert counted.locked_for("10.0.0.1") == LOCKOUT_S
    assert counted.locked_for("10.0.0.2") == 0  # another address is not touched
    await trio.sleep(LOCKOUT_S - 1)
    assert counted.locked_for("10.0.0.1") == pytest.approx(1)
    await trio.sleep(1)
    assert counted.locked_for("10.0.0.1") == 0
    counted.wrong("10.0.0.1")  # the count starts afresh after a lockout
    assert counted.locked_for("10.0.0.1") == 0


async def test_a_right_key_starts_the_count_afresh(clock: trio.testing.MockClock) -> None:
    counted = KeyGuesses()
    for _ in range(3):
        for _ in range(WRONG_KEYS - 1):
            counted.wrong("10.0.0.1")
        counted.right("10.0.0.1")
    assert counted.locked_for("10.0.0.1") == 0


async def test_wrong_keys_further_apart_than_the_window_never_lock_out(clock: trio.testing.MockClock) -> None:
    counted = KeyGuesses()
    for _ in range(3 * WRONG_KEYS):
        counted.wrong("10.0.0.1")
        await trio.sleep(WINDOW_S / (WRONG_KEYS - 1) + 0.1)
    assert counted.locked_for("10.0.0.1") == 0


async def test_past_the_addresses_it_counts_it_keeps_only_those_locked_out(
    clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guesses, "MAX_CLIENTS", 4)
    counted = KeyGuesses()
    for _ in range(WRONG_KEYS):
        counted.wrong("locked")
    for index in range(3):
        counted.wrong(f"10.0.0.{index}")
    counted.wrong("10.0.1.1")  # the fifth address: the three counting are forgotten, the locked one kept
    assert counted.locked_for("locked") == LOCKOUT_S
    assert len(counted._counts) == 2


async def test_when_those_locked_out_alone_fill_it_the_memory_starts_afresh(
    clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guesses, "MAX_CLIENTS", 2)
    counted = KeyGuesses()
    for client in ("a", "b"):
        for _ in range(WRONG_KEYS):
            counted.wrong(client)
    counted.wrong("c")
    assert (counted.locked_for("a"), counted.locked_for("b")) == (0, 0)
    assert len(counted._counts) == 1
