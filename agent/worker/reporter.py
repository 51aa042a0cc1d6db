"""Gets every result to the master, even across master outages and agent restarts.

A result is tried for a short while; if the master is still unreachable it
goes to the outbox, a directory of one JSON file per job in the work dir, and
a background task delivers it later, also after a restart. The master accepts
a repeated result once, so a result whose answer was lost may safely go again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import attrs
import trio

from agent.client import (
    AuthError,
    Forbidden,
    MasterClient,
    MasterError,
    MasterUnavailable,
    StateConflict,
    UnknownToMaster,
)
from agent.models import JobResult
from agent.worker.backoff import Backoff
from agent.worker.identity import NodeTokens
from agent.worker.tempfiles import temporary_for

log = logging.getLogger(__name__)

# How long a job task tries before it leaves the result to the outbox and frees its slot.
DELIVERY_ATTEMPT_S = 10.0
# The outbox retries at least this often while it holds results.
OUTBOX_RETRY_CAP_S = 30.0


@attrs.define
class Outbox:
    """Results not yet delivered, one ``<job id>.json`` each; written atomically."""

    directory: Path

    def save(self, result: JobResult) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{result.job_id}.json"
        temporary = temporary_for(path)  # one a killed agent left is removed at the next start
        temporary.write_text(json.dumps(result.to_json()))
        os.replace(temporary, path)

    def pending(self) -> list[JobResult]:
        results = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                results.append(JobResult.from_json(json.loads(path.read_text())))
            except (OSError, ValueError) as exc:
                # Keep the file for a person to look at, out of the retry loop.
                log.error("Unreadable result %s (%s); moved aside as .bad", path, exc)
                path.rename(path.with_suffix(".bad"))
        return results

    def job_ids(self) -> list[str]:
        return [path.stem for path in self.directory.glob("*.json")]

    def remove(self, job_id: str) -> None:
        (self.directory / f"{job_id}.json").unlink(missing_ok=True)


@attrs.define
class ResultReporter:
    client: MasterClient
    outbox: Outbox
    # A result from an earlier run of the agent, under another node, goes with that node's token.
    tokens: NodeTokens
    # Quitting: no time to talk to the master, results go straight to the outbox.
    offline: bool = False
    _queued: trio.Event = attrs.field(factory=trio.Event)
    _in_flight: set[str] = attrs.field(factory=set)

    def held_job_ids(self) -> set[str]:
        """Jobs whose results are not settled yet: being sent, or waiting in the outbox.

        The node still answers for them, so it lists them to the master (in
        heartbeats and when it registers again), which keeps their leases.
        """
        return self._in_flight | set(self.outbox.job_ids())

    async def deliver(self, result: JobResult, *, patience: float = DELIVERY_ATTEMPT_S) -> None:
        """Send now, retrying for ``patience`` seconds; else keep it in the outbox.

        Shielded: a result is never lost to a cancel (shutdown, a second signal).
        """
        self._in_flight.add(result.job_id)
        try:
            with trio.CancelScope(shield=True):
                if await self._try_to_send(result, 0 if self.offline else patience):
                    return
                self.outbox.save(result)
        finally:
            self._in_flight.discard(result.job_id)
        log.warning(
            "The master did not take the result of job %s; kept in %s and retried until it does",
            result.job_id, self.outbox.directory,
        )
        self._queued.set()

    async def _try_to_send(self, result: JobResult, patience: float) -> bool:
        """Whether the result was settled within ``patience`` seconds."""
        with trio.move_on_after(patience):
            backoff = Backoff(base=0.25, cap=2.0)
            while True:
                try:
                    await self._send(result)
                    return True
                except (MasterUnavailable, AuthError) as exc:
                    log.debug("result of job %s not delivered yet: %s", result.job_id, exc)
                    await trio.sleep(backoff.next())
        return False

    async def _send(self, result: JobResult) -> None:
        """One attempt; any answer but "unreachable" or "refused credentials" settles the result.

        Raises:
            MasterUnavailable, AuthError: keep the result and try again later.
        """
        # This run's own results go with the client's token; only an earlier run's need the file.
        token = "" if result.node_id == self.client.node_id else self.tokens.for_node(result.node_id)
        try:
            ack = await self.client.send_result(result, token=token)
        except Forbidden as exc:
            if result.node_id == self.client.node_id:
                raise
            # An earlier run's node, registered again since by someone else: nobody can deliver it.
            log.warning("The master refused the result of job %s for node %s (%s); dropped",
                        result.job_id, result.node_id, exc)
        except (MasterUnavailable, AuthError):
            raise
        except (StateConflict, UnknownToMaster) as exc:
            log.warning("The master no longer expects the result of job %s (%s); dropped", result.job_id, exc)
        except MasterError as exc:
            log.error("The master refused the result of job %s: %s", result.job_id, exc)
        else:
            detail = f" [{result.failure_reason}] {result.error}" if result.error else ""
            log.info("Job %s %s%s (master: %s)", result.job_id, result.status.value, detail, ack.status)

    async def serve_outbox(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver what the outbox holds, now and whenever it gets more; runs until cancelled."""
        task_status.started()
        backoff = Backoff(base=1.0, cap=OUTBOX_RETRY_CAP_S)
        while True:
            self._queued = trio.Event()
            waiting = self.outbox.pending()
            try:
                for result in waiting:
                    await self._send(result)
                    self.outbox.remove(result.job_id)
                    log.info("Delivered the kept result of job %s", result.job_id)
            except (MasterUnavailable, AuthError):
                await trio.sleep(backoff.next())
                continue
            backoff.reset()
            await self._queued.wait()
