"""Address kinds, allow-lists and the resolve-then-check step (agent/worker/netguard.py)."""

from __future__ import annotations

import ipaddress

import pytest

from agent.worker.netguard import (
    AddressRefused,
    AllowEntry,
    AllowList,
    DestinationUnavailable,
    address_kind,
    checked_url,
    resolve_checked,
)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
        ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.5", "private"),
        ("100.64.0.1", "private"), ("fd00::1", "private"), ("fec0::1", "private"),
        ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"), ("::", "unspecified"),
        ("224.0.0.1", "multicast"), ("239.1.2.3", "multicast"), ("ff02::1", "multicast"),
        ("240.0.0.1", "private"), ("255.255.255.255", "private"), ("192.0.2.1", "private"),
        ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"), ("2002:7f00:1::", "loopback"), ("::7f00:1", "reserved"),
        ("8.8.8.8", ""), ("2606:4700::1111", ""), ("::ffff:8.8.8.8", ""),
    ],
)
def test_every_non_public_address_has_a_kind(address: str, kind: str) -> None:
    """Loopback, private, link-local, unspecified, multicast and reserved, also inside IPv6 forms."""
    assert address_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        ("127.0.0.1:8000", AllowEntry("127.0.0.1", 8000)), ("10.0.0.5", AllowEntry("10.0.0.5")),
        ("Media.LAN:1935", AllowEntry("media.lan", 1935)), ("media.lan", AllowEntry("media.lan")),
        ("[::1]:8080", AllowEntry("::1", 8080)), ("[::1]", AllowEntry("::1")), ("fd00::1", AllowEntry("fd00::1")),
    ],
)
def test_allow_list_entries_read_every_form(text: str, entry: AllowEntry) -> None:
    """HOST, HOST:PORT, IP, IP:PORT and bracketed IPv6, names in lower case."""
    assert AllowEntry.parse(text) == entry


@pytest.mark.parametrize("text", ["", "host:0", "host:70000", "host:http", "a b", "[::1", "[::1]x", "-x:1"])
def test_a_malformed_entry_is_refused_with_the_forms(text: str) -> None:
    """The message shows the accepted forms."""
    with pytest.raises(ValueError, match="HOST:PORT"):
        AllowEntry.parse(text)


def test_flag_values_merge_into_one_list() -> None:
    """Commas and repeats add entries; true allows all; false and nothing allow none."""
    allow = AllowList.parse(["127.0.0.1:1,127.0.0.1:2", "media.lan"])
    assert allow.entries == (AllowEntry("127.0.0.1", 1), AllowEntry("127.0.0.1", 2), AllowEntry("media.lan"))
    assert AllowList.parse(["media.lan", "true"]).everything
    assert not AllowList.parse(["false"]) and not AllowList.parse([])


def test_an_entry_allows_its_address_and_port_only() -> None:
    """127.0.0.1:8000 admits that port alone; a name entry admits what the name resolves to."""
    loopback = ipaddress.ip_address("127.0.0.1")
    allow = AllowList.parse(["127.0.0.1:8000", "media.lan"])
    assert allow.allows("127.0.0.1", loopback, 8000) and allow.allows("localhost", loopback, 8000)
    assert not allow.allows("127.0.0.1", loopback, 8001)
    assert allow.allows("MEDIA.lan.", ipaddress.ip_address("10.0.0.9"), 443)
    assert not allow.allows("other.lan", ipaddress.ip_address("10.0.0.9"), 443)


async def test_a_name_is_refused_when_any_of_its_addresses_is_private() -> None:
    """localhost resolves to loopback: refused naming the name, the address and the flag."""
    with pytest.raises(AddressRefused, match=r"localhost resolves to (127\.0\.0\.1|::1), which is a loopback") as info:
        await resolve_checked("localhost", 80, AllowList(), field="input", flag="--allow-private-inputs")
    assert info.value.field == "input" and "--allow-private-inputs" in str(info.value)


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.1", "0", "[::ffff:127.0.0.1]"])
async def test_every_spelling_the_resolver_reads_is_checked(host: str) -> None:
    """Short, decimal, hex and mapped forms of loopback, and 0, are what they resolve to."""
    with pytest.raises(AddressRefused):
        await resolve_checked(host, 80, AllowList(), field="input", flag="--allow-private-inputs")


async def test_an_allowed_address_comes_back_to_connect_to() -> None:
    """The checked address is returned, so the caller connects to it and not to the name."""
    address = await resolve_checked("127.0.0.1", 9, AllowList.parse(["127.0.0.1:9"]), field="input", flag="-")
    assert address == ipaddress.ip_address("127.0.0.1")


async def test_a_name_that_does_not_resolve_is_not_the_jobs_fault() -> None:
    """DestinationUnavailable (network_error, retried), naming the host."""
    with pytest.raises(DestinationUnavailable, match="no-such-host.invalid does not resolve"):
        await resolve_checked("no-such-host.invalid", 80, AllowList(), field="input", flag="-")


async def test_a_checked_url_carries_the_address_and_keeps_the_rest() -> None:
    """User, port, path and query stay; the host becomes the checked literal, IPv6 bracketed."""
    allow = AllowList(everything=True)
    url = await checked_url("rtmp://u:p@localhost:1935/live/key?x=1", allow, field="rtmp_url", flag="-")
    assert url in ("rtmp://u:p@127.0.0.1:1935/live/key?x=1", "rtmp://u:p@[::1]:1935/live/key?x=1")
    assert await checked_url("srt://[::1]:9000?mode=caller", allow, field="input", flag="-") == (
        "srt://[::1]:9000?mode=caller"
    )


async def test_the_default_port_is_the_one_checked() -> None:
    """rtmp:// without a port is checked as 1935, so an entry for another port does not admit it."""
    with pytest.raises(AddressRefused):
        await checked_url("rtmp://127.0.0.1/live", AllowList.parse(["127.0.0.1:80"]), field="rtmp_url", flag="-")
    assert await checked_url("rtmp://127.0.0.1/live", AllowList.parse(["127.0.0.1:1935"]), field="rtmp_url",
                             flag="-") == "rtmp://127.0.0.1/live"
