"""The master-as-worker guard: an agent on the master's own host needs the operator's consent.

The two compete for CPU and memory, and a busy encoder slows the master's API
for every other node, so the original agent refused this unless started with
``--allow-master-as-worker`` and then asked on the terminal. It compared the
master URL with ``localhost`` and the host name as text; we resolve the
master's host and ask the kernel whether each address is ours, since binding a
socket succeeds only to a local address (loopback included).
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import socket
import urllib.parse
from collections.abc import Callable

import trio

from agent.config import AgentConfig

__all__ = ["HostDecision", "decide", "is_local_address", "is_master_host"]

log = logging.getLogger(__name__)

PROMPT = "Do you want to continue? (yes/no): "


class HostDecision(enum.Enum):
    """What the agent does on the master's host."""

    RUN = enum.auto()
    # Exits 2, as on other configuration errors.
    REFUSED = enum.auto()
    # Exits 0: the operator chose not to.
    DECLINED = enum.auto()


def is_local_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` belongs to this machine."""
    if address.is_loopback or address.is_unspecified:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


async def is_master_host(master_url: str) -> bool:
    """Whether the master at ``master_url`` resolves to an address of this machine.

    A host that does not resolve is not ours; registration will say what is wrong.
    """
    host = urllib.parse.urlsplit(master_url).hostname
    if not host:
        return False
    try:
        infos = await trio.socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return any(is_local_address(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos)


async def decide(config: AgentConfig, *, interactive: bool, ask: Callable[[str], str] = input) -> HostDecision:
    """Whether an agent whose master runs on this host may start; logs why in every case.

    Args:
        config: ``allow_master_as_worker`` is the consent; ``skip_confirmation``
            skips the question.
        interactive: stdin is a terminal; only then is there anyone to ask.
        ask: reads the answer to a prompt (runs in a thread: it blocks).

    Returns:
        RUN, REFUSED without the flag, or DECLINED when the operator said no.
    """
    log.warning(
        "The master at %s runs on this host: master and worker will compete for CPU and memory, and heavy "
        "jobs slow the master's API for every node. Meant for development and testing; in production run "
        "workers on other machines.", config.master_url,
    )
    if not config.allow_master_as_worker:
        log.error("Refusing to run on the master's host; restart with --allow-master-as-worker to do it anyway")
        return HostDecision.REFUSED
    if interactive and not config.skip_confirmation:
        try:
            answer = await trio.to_thread.run_sync(ask, PROMPT)
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("yes", "y"):
            log.info("Not starting: the operator declined to run a worker on the master's host")
            return HostDecision.DECLINED
    log.info("Running as a worker on the master's host (labelled master_as_worker)")
    return HostDecision.RUN
