"""Wrong API keys counted by client address, so that the key cannot be guessed at request speed.

The API key is the operator's choice and may be short; node tokens are 256
random bits (:mod:`.tokens`). An address that sends :data:`WRONG_KEYS` wrong
keys within :data:`WINDOW_S` seconds, wherever the key is taken (operator
routes, artefact routes, the dashboard's login, node routes of a master
accepting legacy agents), is refused every key check, the right key
included, for :data:`LOCKOUT_S` seconds: 429 with ``Retry-After``. A right key
starts its count afresh, so a client that mistyped now and then is never
locked out. A node's token is looked up before the key is compared, so a
lockout never refuses a node its own token; a refused one counts as a wrong
key only where the key is also taken (artefact routes, and node routes with
``--allow-legacy-agents``), since it may be a guess at the key there.

The address is the connection's peer: behind a reverse proxy every client
has the proxy's, and one guesser locks every operator out for a while.
"""

from __future__ import annotations

import logging

import attrs
import trio

__all__ = ["KeyGuesses"]

log = logging.getLogger("agent.master")

WRONG_KEYS = 10
WINDOW_S = 60.0
LOCKOUT_S = 60.0
# Addresses counted at once; past it only those locked out are kept, and if they alone are as many,
# the memory starts afresh (a guesser with that many addresses gains little by it).
MAX_CLIENTS = 4096


@attrs.define
class _Count:
    since: float
    wrong: int = 0
    locked_until: float = 0.0


class KeyGuesses:
    """Per client address: wrong keys in the current window, and until when it is locked out."""

    def __init__(self) -> None:
        self._counts: dict[str, _Count] = {}

    def locked_for(self, client: str) -> float:
        """Seconds before ``client`` may present a key again; 0 when it may now."""
        count = self._counts.get(client)
        return max(0.0, count.locked_until - trio.current_time()) if count is not None else 0.0

    def right(self, client: str) -> None:
        """``client`` presented the key: its count starts afresh."""
        self._counts.pop(client, None)

    def wrong(self, client: str) -> None:
        """``client`` presented a wrong key; the last one allowed in a window locks it out."""
        now = trio.current_time()
        count = self._counts.get(client)
        if count is None or now - count.since > WINDOW_S:
            if len(self._counts) >= MAX_CLIENTS:
                self._counts = {known: kept for known, kept in self._counts.items() if kept.locked_until > now}
                if len(self._counts) >= MAX_CLIENTS:
                    self._counts.clear()
            count = self._counts[client] = _Count(since=now)
        count.wrong += 1
        if count.wrong >= WRONG_KEYS:
            until = now + LOCKOUT_S
            self._counts[client] = _Count(since=until, locked_until=until)
            log.warning(
                "%d wrong API keys from %s within %.0fs: its requests with a key are refused for %.0fs",
                WRONG_KEYS, client, WINDOW_S, LOCKOUT_S,
            )
