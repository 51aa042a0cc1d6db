"""The master's node-token check keeps a matched token for a few seconds, and never a stale one for long.

A fake store counts the reads; the clock is Trio's MockClock, with no I/O in flight.
"""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing
from starlette.requests import Request

from agent.master.auth import TOKEN_TRUST_S, Forbidden, Guard
from agent.master.store import NotFound
from agent.master.tokens import hash_token


@attrs.define
class TokenStore:
    """Just the store method the guard reads, counting the reads."""

    hashes: dict[str, str]
    reads: int = 0

    async def node_token_hash(self, node_id: str) -> str:
        self.reads += 1
        if node_id not in self.hashes:
            raise NotFound(f"node {node_id} not found; register it first")
        return self.hashes[node_id]


def request(token: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/jobs/next", "headers": [
        (b"authorization", f"Bearer {token}".encode()),
    ], "client": ("127.0.0.1", 5000)})


def guard_over(store: TokenStore) -> Guard:
    return Guard(store, api_key="key", allow_legacy_agents=False)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_a_matched_token_is_read_again_only_after_the_trust_period(clock: trio.testing.MockClock) -> None:
    """Three checks within the period cost one read; the first check after it reads again."""
    store = TokenStore({"n1": hash_token("old")})
    guard = guard_over(store)
    for _ in range(3):
        await guard.check_node(request("old"), "n1")
    assert store.reads == 1
    await trio.sleep(TOKEN_TRUST_S + 0.1)
    await guard.check_node(request("old"), "n1")
    assert store.reads == 2


async def test_a_token_replaced_elsewhere_stops_passing_within_the_period(clock: trio.testing.MockClock) -> None:
    """Another master's registration: the old token passes no longer than the period; the new one at once."""
    store = TokenStore({"n1": hash_token("old")})
    guard = guard_over(store)
    await guard.check_node(request("old"), "n1")
    store.hashes["n1"] = hash_token("new")
    await guard.check_node(request("old"), "n1")  # the bound the module states: kept for the period
    await trio.sleep(TOKEN_TRUST_S + 0.1)
    with pytest.raises(Forbidden):
        await guard.check_node(request("old"), "n1")
    await guard.check_node(request("new"), "n1")


async def test_a_new_token_passes_at_once_and_the_old_one_then_fails(clock: trio.testing.MockClock) -> None:
    """A token other than the one kept is read from the store: it passes, and replaces what is kept."""
    store = TokenStore({"n1": hash_token("old")})
    guard = guard_over(store)
    await guard.check_node(request("old"), "n1")
    store.hashes["n1"] = hash_token("new")
    await guard.check_node(request("new"), "n1")
    with pytest.raises(Forbidden):
        await guard.check_node(request("old"), "n1")


async def test_forgetting_a_node_refuses_its_old_token_at_once(clock: trio.testing.MockClock) -> None:
    """This master's own registration or deletion: the next check reads the store."""
    store = TokenStore({"n1": hash_token("old")})
    guard = guard_over(store)
    await guard.check_node(request("old"), "n1")
    del store.hashes["n1"]
    guard.forget("n1")
    with pytest.raises(NotFound):
        await guard.check_node(request("old"), "n1")


async def test_a_wrong_token_is_refused_and_never_kept(clock: trio.testing.MockClock) -> None:
    """Each wrong token is checked against the store, so it never passes from memory."""
    store = TokenStore({"n1": hash_token("right")})
    guard = guard_over(store)
    for _ in range(2):
        with pytest.raises(Forbidden):
            await guard.check_node(request("wrong"), "n1")
    assert store.reads == 2
