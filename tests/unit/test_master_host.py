"""The master-as-worker guard: what counts as this host, and who decides."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from agent.config import AgentConfig
from agent.worker.master_host import PROMPT, HostDecision, decide, is_local_address, is_master_host


@pytest.mark.parametrize(("address", "local"), [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True),
                                                ("0.0.0.0", True), ("192.0.2.1", False), ("8.8.8.8", False)])
def test_local_addresses_are_the_ones_we_can_bind(address: str, local: bool) -> None:
    assert is_local_address(ipaddress.ip_address(address)) is local


@pytest.mark.parametrize(("url", "ours"), [("http://localhost:8080", True), ("https://127.0.0.1", True),
                                           ("http://192.0.2.1:8080", False), ("http://no-such-host.invalid", False)])
async def test_the_master_is_on_this_host_when_its_name_resolves_here(url: str, ours: bool) -> None:
    assert await is_master_host(url) is ours


def answers(reply: str) -> tuple[list[str], Callable[[str], str]]:
    """A stand-in for the terminal: gives ``reply`` and records each prompt."""
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return reply

    return asked, ask


@pytest.mark.parametrize(
    ("allow", "skip", "interactive", "reply", "decision", "asks"),
    [
        (False, True, True, "yes", HostDecision.REFUSED, False),
        (True, False, True, "yes", HostDecision.RUN, True),
        (True, False, True, "Y\n", HostDecision.RUN, True),
        (True, False, True, "no", HostDecision.DECLINED, True),
        (True, False, True, "", HostDecision.DECLINED, True),
        (True, True, True, "no", HostDecision.RUN, False),
        (True, False, False, "no", HostDecision.RUN, False),
    ],
)
async def test_only_the_flag_allows_it_and_a_terminal_is_asked_first(
    allow: bool, skip: bool, interactive: bool, reply: str, decision: HostDecision, asks: bool
) -> None:
    """Refused without --allow-master-as-worker; on a terminal 'yes' or 'y' goes on, unless --skip-confirmation."""
    asked, ask = answers(reply)
    config = AgentConfig(allow_master_as_worker=allow, skip_confirmation=skip)
    assert await decide(config, interactive=interactive, ask=ask) is decision
    assert asked == ([PROMPT] if asks else [])
