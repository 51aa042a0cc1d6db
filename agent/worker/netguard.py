"""Which addresses a job may make this worker reach, decided after name resolution.

A job names URLs: its input, the input's redirects, playlist segments, an
RTMP output. Checking the URL's text is not enough: ``localhost``, the
machine's own host name or any DNS name can resolve to 127.0.0.1 or to a
cloud metadata address (169.254.169.254), and a redirect can lead anywhere.
So every connection a job causes is made like this:

1. resolve the host name (:func:`resolve_checked`);
2. refuse unless *every* resolved address is public (:func:`address_kind`),
   or the operator allowed it (:class:`AllowList`): one private answer among
   public ones is a sign of a rebinding trick, not a reason to pick another;
3. connect to the address that was checked, never to the name again, so a
   second DNS answer cannot differ from the first (``fetch`` connects to it
   itself; FFmpeg gets the address as a literal in its URL, see
   :func:`checked_url`).

A refused address fails the job as ``user_error`` before any connection, and
the message names the address's kind but nothing learned from a connection,
so job logs cannot map which private ports are open.

The operator's allowance (``--allow-private-inputs``, ``--allow-private-outputs``)
is either everything (the flag alone, as before) or a list of ``HOST``,
``HOST:PORT``, ``IP`` or ``IP:PORT`` entries: a name entry lets that name
resolve to private addresses, an address entry lets that address be reached.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Iterable, Sequence

import attrs
import trio

from agent.models import FailureReason
from agent.scenarios import JobRejected

__all__ = [
    "AddressRefused",
    "AllowEntry",
    "AllowList",
    "DestinationUnavailable",
    "IPAddress",
    "address_kind",
    "as_allow_list",
    "checked_url",
    "resolve_checked",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 prefixes that carry an IPv4 address in their last 32 bits and are
# translated to it by a NAT64 gateway (RFC 6052, RFC 8215).
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class AddressRefused(JobRejected):
    """A URL of the job leads to an address this worker does not reach: the job's fault.

    ``field`` names the job parameter (``input``, ``rtmp_url``); the message
    names the host, the address and its kind, and the flag that would allow it.
    """


class DestinationUnavailable(Exception):
    """A destination of the job could not be reached for a reason outside the job.

    ``reason`` is the failure to report: ``network_error`` by default (the
    name does not resolve, the server does not answer), retried by the master
    since another attempt may succeed.
    """

    def __init__(self, message: str, reason: FailureReason = FailureReason.NETWORK_ERROR) -> None:
        super().__init__(message)
        self.reason = reason


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that an IPv4-mapped, 6to4, Teredo or NAT64 address reaches."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_kind(address: IPAddress) -> str:
    """Why ``address`` is not public (``"loopback"``, ``"private"`` ...), or ``""`` when it is.

    IPv6 forms that lead to an IPv4 address (``::ffff:127.0.0.1``,
    ``64:ff9b::a9fe:a9fe``) count as that address. Carrier-grade NAT
    (100.64.0.0/10) and the old site-local range count as private.

    Example::

        >>> address_kind(ipaddress.ip_address("169.254.169.254"))
        'link-local'
    """
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            return address_kind(inner)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local):
        return "private"
    if address.is_reserved:
        return "reserved"
    return "" if address.is_global else "private"


@attrs.frozen
class AllowEntry:
    """One ``--allow-private-*`` entry: a host name or an address, on one port or on any (``port`` None)."""

    host: str
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> AllowEntry:
        """Read ``HOST``, ``HOST:PORT``, ``IP``, ``IP:PORT``, ``[IPv6]`` or ``[IPv6]:PORT``.

        Raises:
            ValueError: the text is none of these; the message shows the forms.
        """
        raw = text.strip()
        host, port_text = raw, ""
        if raw.startswith("["):
            host, bracket, rest = raw[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                host = ""
            port_text = rest[1:]
        elif raw.count(":") == 1:
            host, _, port_text = raw.partition(":")
        port: int | None = None
        if port_text or raw.endswith(":"):
            port = int(port_text) if port_text.isdigit() else 0
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            host = host.lower() if _HOST_NAME.fullmatch(host) else ""
        if not host or port == 0 or (port is not None and port > 65535):
            raise ValueError(
                f"{text!r} is not an allow-list entry; write HOST, HOST:PORT, IP, IP:PORT or [IPv6]:PORT, "
                "for example 127.0.0.1:8000 or media.lan"
            )
        return cls(host, port)

    def matches(self, host: str, address: IPAddress, port: int) -> bool:
        """Whether a connection to ``address`` on ``port``, found by resolving ``host``, is this entry's."""
        if self.port is not None and self.port != port:
            return False
        return self.host in (host.lower().rstrip("."), str(address))


@attrs.frozen
class AllowList:
    """The private destinations the operator lets jobs reach.

    ``everything`` is the old boolean flag (any private address); otherwise
    only ``entries`` are allowed. The empty list, the default, allows none.
    """

    everything: bool = False
    entries: tuple[AllowEntry, ...] = ()

    @classmethod
    def parse(cls, values: Iterable[str]) -> AllowList:
        """Merge flag values: ``true``/``false``, or entries separated by commas.

        The flag may be repeated; ``true`` anywhere allows everything, and a
        lone ``false`` (the default) allows nothing.

        Raises:
            ValueError: an entry does not parse (see :meth:`AllowEntry.parse`).
        """
        everything, entries = False, []
        for value in values:
            if value.strip().lower() in _TRUE:
                everything = True
            elif value.strip().lower() not in _FALSE:
                entries += [AllowEntry.parse(part) for part in value.split(",") if part.strip()]
        return cls(everything, tuple(entries))

    def merged(self, other: AllowList) -> AllowList:
        """Both lists' allowances: what a repeated flag means."""
        return AllowList(self.everything or other.everything, self.entries + other.entries)

    def __bool__(self) -> bool:
        """True when any private destination is allowed."""
        return self.everything or bool(self.entries)

    def allows(self, host: str, address: IPAddress, port: int) -> bool:
        return self.everything or any(e.matches(host, address, port) for e in self.entries)

    def check(self, host: str, port: int, addresses: Sequence[IPAddress], *, field: str, flag: str) -> None:
        """Refuse unless every address is public or allowed.

        Raises:
            AddressRefused: naming the first address that is neither, its kind and ``flag``.
        """
        for address in addresses:
            kind = address_kind(address)
            if kind and not self.allows(host, address, port):
                shown = host if str(address) == host else f"{host} resolves to {address}, which"
                article = "an" if kind[0] in "aeiou" else "a"
                raise AddressRefused(
                    field,
                    f"host {shown} is {article} {kind} address; this worker does not connect to "
                    f"private addresses unless started with {flag}",
                )


def as_allow_list(value: bool | AllowList) -> AllowList:
    """The list itself, or for the old boolean setting: True allows every private address, False none."""
    return value if isinstance(value, AllowList) else AllowList(everything=value)


async def resolve_checked(
    host: str, port: int, allow: AllowList, *, field: str, flag: str
) -> IPAddress:
    """Resolve ``host`` and return the address to connect to, once every answer passed the check.

    Args:
        host: a DNS name or an IP literal (IPv6 without brackets).
        port: the port the connection will use; allow-list entries may name it.
        allow: the operator's allowance for this direction.
        field: the job parameter the URL came from, for the message.
        flag: the flag that would allow a refused address, for the message.

    Returns:
        The first resolved address; every other one was checked too.

    Raises:
        AddressRefused: some answer is private and not allowed.
        DestinationUnavailable: the name does not resolve.
    """
    bare = host[1:-1] if host.startswith("[") else host
    try:
        infos = await trio.socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DestinationUnavailable(f"{field} host {bare} does not resolve ({exc.strerror or exc})") from None
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        # Drop any IPv6 zone index ("fe80::1%eth0"): the address decides the kind.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise DestinationUnavailable(f"{field} host {bare} has no address")
    allow.check(bare, port, addresses, field=field, flag=flag)
    return addresses[0]


_DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443, "srt": 0, "http": 80, "https": 443}


async def checked_url(url: str, allow: AllowList, *, field: str, flag: str) -> str:
    """``url`` with its host replaced by the checked address, for a program that would resolve it again.

    The user part, port, path and query are kept; an IPv6 address is
    bracketed. A URL without a port keeps none, and the scheme's default
    port is the one checked against the allow-list.

    Raises:
        AddressRefused: as :func:`resolve_checked`; also when the URL has no host.
        DestinationUnavailable: the host does not resolve.

    Example::

        await checked_url("rtmp://media.example/live/k", AllowList(), field="rtmp_url",
                          flag="--allow-private-outputs")
        # "rtmp://203.0.113.7/live/k"
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        raise AddressRefused(field, f"{url} has no host")
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    address = await resolve_checked(parts.hostname, port, allow, field=field, flag=flag)
    literal = f"[{address}]" if address.version == 6 else str(address)
    user = parts.netloc.rpartition("@")[0]
    netloc = (user + "@" if user else "") + literal + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
