"""Who may call the master: operators with the API key, each node only for itself.

The shared API key (``--api-key``) admits the operator routes (the CLI) and
registration. A registration answers with a node token (:mod:`.tokens`), and
every route that speaks for a node — claims, heartbeats, progress, results,
its event channel — needs that node's own token, so a key holder cannot post
results or heartbeats for a node it is not. The original Go agent knows no
tokens and sends the shared key everywhere; ``--allow-legacy-agents`` accepts
that on node routes, at the price of that guarantee.

Artefacts (``/artifacts/{sha256}``) are read and written by both: the CLI with
the key uploads inputs and downloads outputs, and agents with their node
token download the inputs of their jobs and upload the outputs. The rule for a
node token (:meth:`Guard.check_artifact`): any registered node may ask for an
artefact's size and upload one (an artefact is named by its SHA-256, so an
upload cannot change what a name holds, and the quota bounds the space), but
may download only an artefact named by a job leased to it now, so a node
cannot read other people's files.

Refusals are logged with the client's address, at most once a minute per
address, so probing shows in the log without flooding it. Wrong API keys are
counted per address, and an address that sent too many lately is refused
any key for a while (:mod:`.guesses`).

A node's token hash, once a request has matched it, is kept in memory for
:data:`TOKEN_TRUST_S`, so a busy node's claims, progress and results do not
each cost a read of the store. A registration or deletion through this master
drops the node's entry at once; one through another master sharing the
PostgreSQL database is seen within :data:`TOKEN_TRUST_S`, during which the
node's previous token still passes this master's check (its leases were
handed back by the registration, so its results for them are 409). A token
that does not match what is kept is always checked against the store, so a
new token works at once everywhere.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Awaitable, Callable

import trio
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response

from .guesses import KeyGuesses
from .store import Store
from .tokens import hash_token, token_matches

__all__ = ["Forbidden", "Guard", "LockedOut", "client_address"]

log = logging.getLogger("agent.master")

# One line per client address per minute is enough to see a probe or a misconfigured agent.
REFUSAL_LOG_INTERVAL_S = 60.0
# Addresses remembered for that; past it the memory starts afresh.
REFUSAL_LOG_MAX_CLIENTS = 4096
# How long a token that matched is trusted without reading the store again: one read per node
# per few seconds instead of one per request, and another master's re-registration counts soon.
TOKEN_TRUST_S = 5.0
# Nodes whose matched token is kept; past it the memory starts afresh (a read each, once).
TOKEN_TRUST_MAX_NODES = 100_000


class Forbidden(Exception):
    """The request speaks for a node without that node's token; answered 403, nothing changed."""


class LockedOut(Exception):
    """The client sent too many wrong API keys lately (:mod:`.guesses`); answered 429 with ``Retry-After``."""

    def __init__(self, client: str, seconds: float) -> None:
        self.retry_after = math.ceil(seconds)
        super().__init__(
            f"too many wrong API keys from {client}: no key from it is checked for {self.retry_after} s more; "
            "then use the key the master was started with (--api-key or --api-key-file)"
        )


def client_address(connection: HTTPConnection) -> str:
    return connection.client.host if connection.client else "unknown"


def bearer_token(connection: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer`` header; ``None`` when there is no header."""
    header = connection.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _go_http_error(message: str, status: int) -> Response:
    """A plain-text error as Go's ``http.Error`` writes it, so Go clients read it the same."""
    return PlainTextResponse(message + "\n", status_code=status, headers={"X-Content-Type-Options": "nosniff"})


class Guard:
    """The master's checks of the API key and node tokens."""

    def __init__(self, store: Store, *, api_key: str, allow_legacy_agents: bool) -> None:
        self._store = store
        self._key = api_key.encode()
        self._allow_legacy = allow_legacy_agents
        self._guesses = KeyGuesses()
        self._last_logged: dict[str, float] = {}
        # node id -> (token hash that matched, until when it is trusted without a read)
        self._trusted: dict[str, tuple[str, float]] = {}

    def presents_key(self, connection: HTTPConnection, token: str | None) -> bool:
        """Whether ``token`` is the API key; a wrong one counts against the client (:mod:`.guesses`).

        Every caller has ruled out a node's own token before, so a wrong key is a refusal.
        No token, or no key on this master, is no guess.

        Raises:
            LockedOut: the client sent too many wrong keys lately; its token is not even compared.
        """
        if token is None or not self._key:
            return False
        client = client_address(connection)
        if (wait := self._guesses.locked_for(client)) > 0:
            self._log_refusal(connection, "429 too many wrong API keys lately")
            raise LockedOut(client, wait)
        if hmac.compare_digest(token.encode(), self._key):
            self._guesses.right(client)
            return True
        self._guesses.wrong(client)
        return False

    def operator_only(
        self, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """``endpoint`` behind the API key, answered 401 as the Go master does; open when there is no key."""
        if not self._key:
            return endpoint

        async def guarded(request: Request) -> Response:
            token = bearer_token(request)
            if self.presents_key(request, token):
                return await endpoint(request)
            problem = "Missing Authorization header" if token is None else "Invalid API key"
            self._log_refusal(request, f"401 {problem}")
            return _go_http_error(problem, 401)

        return guarded

    async def check_node(self, connection: HTTPConnection, node_id: str) -> None:
        """Pass only a request carrying ``node_id``'s current token (or, if allowed, a legacy agent's key).

        Raises:
            NotFound: no node has that id (the agent should register again).
            Forbidden: the token is missing or belongs to another node, or an earlier run of this one.
            LockedOut: legacy agents are allowed, so the key is taken here, and the client sent
                too many wrong ones lately.
        """
        token = bearer_token(connection)
        if token is not None and self._is_trusted(node_id, token):
            return
        stored = await self._store.node_token_hash(node_id)
        if token is not None and token_matches(token, stored):
            self._trust(node_id, stored)
            return
        if self._allow_legacy and (self.presents_key(connection, token) or (not self._key and not token)):
            return
        self._log_refusal(connection, f"403 not node {node_id}'s token")
        raise Forbidden(
            f"this request does not carry the token of node {node_id}: calls for a node need "
            "'Authorization: Bearer <node_token>' from that node's latest registration (a node registered "
            "again since holds a new one); original Go agents need the master started with --allow-legacy-agents"
        )

    def forget(self, node_id: str) -> None:
        """Stop trusting the node's token without a read: it registered again, or was deleted."""
        self._trusted.pop(node_id, None)

    def _is_trusted(self, node_id: str, token: str) -> bool:
        kept = self._trusted.get(node_id)
        return kept is not None and trio.current_time() < kept[1] and token_matches(token, kept[0])

    def _trust(self, node_id: str, stored: str) -> None:
        if len(self._trusted) >= TOKEN_TRUST_MAX_NODES:
            self._trusted.clear()
        self._trusted[node_id] = (stored, trio.current_time() + TOKEN_TRUST_S)

    async def check_artifact(self, request: Request, sha256: str, *, reading: bool) -> None:
        """Pass the API key, or a registered node's token; to read, the node must hold a job naming it.

        Open, like the operator routes, when the master has no API key.

        Raises:
            HTTPException: 401 with neither the key nor a node's token.
            Forbidden: the node's jobs do not name the artefact it wants to read.
            LockedOut: the client sent too many wrong keys lately.
        """
        if not self._key:
            return
        token = bearer_token(request)
        # A node's token first: it is no guess at the key, so a lockout does not stop it.
        node_id = await self._store.node_with_token(hash_token(token)) if token else None
        if node_id is None:
            if self.presents_key(request, token):
                return
            problem = "Missing Authorization header" if token is None else "Invalid API key or node token"
            self._log_refusal(request, f"401 {problem}")
            raise HTTPException(401, problem)
        if reading and not await self._store.artifact_leased_to(sha256, node_id):
            self._log_refusal(request, f"403 artifact {sha256} is not named by a job of node {node_id}")
            raise Forbidden(
                f"node {node_id} may download only the inputs of jobs leased to it, and no such job names "
                f"artifact {sha256}"
            )

    def _log_refusal(self, connection: HTTPConnection, what: str) -> None:
        client = client_address(connection)
        now = trio.current_time()
        if now - self._last_logged.get(client, -REFUSAL_LOG_INTERVAL_S) < REFUSAL_LOG_INTERVAL_S:
            return
        if len(self._last_logged) >= REFUSAL_LOG_MAX_CLIENTS:
            self._last_logged.clear()
        self._last_logged[client] = now
        log.warning(
            "Refused %s %s from %s: %s (further refusals from it are not logged for %.0fs)",
            connection.scope.get("method", "WEBSOCKET"), connection.url.path, client, what, REFUSAL_LOG_INTERVAL_S,
        )
