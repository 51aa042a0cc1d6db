"""``GET /jobs`` a page at a time: the query, its limits, and the opaque cursor.

Jobs are listed in submission order (sequence number). A cursor names the
last job of a page, so the next page starts after it whatever was submitted,
finished or deleted in between: no job is shown twice or skipped. Cursors are
opaque to clients (base64 of ``after:<sequence number>``), so the master may
change what they hold.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import TypeVar

import attrs

from ..models import JobStatus, Queue

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "JobQuery", "QueryRejected", "cursor_after"]

# A screenful for the CLI's table; old clients that read one page see this many.
DEFAULT_LIMIT = 100
# A page with 1000 jobs of 64 KiB logs each is 64 MB: the most one answer should hold.
MAX_LIMIT = 1000
_PREFIX = "after:"


class QueryRejected(ValueError):
    """A query parameter of ``GET /jobs`` is not valid; the message names it and what is allowed."""


def cursor_after(sequence_number: int) -> str:
    """The cursor of the page that starts after job ``sequence_number``."""
    return base64.urlsafe_b64encode(f"{_PREFIX}{sequence_number}".encode()).decode().rstrip("=")


def _after(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    number = text.removeprefix(_PREFIX)
    if not (text.startswith(_PREFIX) and number.isdigit() and len(number) <= 19):
        raise QueryRejected("cursor is not one this master handed out; start again without it")
    return int(number)


_E = TypeVar("_E", JobStatus, Queue)


def _choice(params: Mapping[str, str], name: str, kind: type[_E]) -> _E | None:
    """The member named by parameter ``name`` (synonyms such as ``queued`` too), or None when absent."""
    wanted = params.get(name, "")
    try:
        return kind(wanted) if wanted else None
    except ValueError:
        raise QueryRejected(f"{name} must be one of {', '.join(member.value for member in kind)}") from None


@attrs.frozen
class JobQuery:
    """What one ``GET /jobs`` asks for: filters, where the page starts and how long it is."""

    status: JobStatus | None = None
    # A node id or address.
    node: str = ""
    queue: Queue | None = None
    # Jobs with a larger sequence number; 0 is the first page.
    after: int = 0
    limit: int = DEFAULT_LIMIT

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> JobQuery:
        """Read ``status``, ``node``, ``queue``, ``cursor`` and ``limit`` from the query string.

        Raises:
            QueryRejected: naming the parameter, e.g. ``limit must be a whole number from 1 to 1000``.
        """
        limit_text = params.get("limit", "") or str(DEFAULT_LIMIT)
        if not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 4) or not (
            1 <= int(limit_text) <= MAX_LIMIT
        ):
            raise QueryRejected(f"limit must be a whole number from 1 to {MAX_LIMIT}")
        node = params.get("node", "")
        if "\x00" in node:
            raise QueryRejected("node must be a node id or address, without NUL characters")
        cursor = params.get("cursor", "")
        return cls(
            status=_choice(params, "status", JobStatus),
            node=node,
            queue=_choice(params, "queue", Queue),
            after=_after(cursor) if cursor else 0,
            limit=int(limit_text),
        )
