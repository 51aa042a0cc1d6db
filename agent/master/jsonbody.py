"""JSON in and out of the master: only what every client and database can carry.

Python's :mod:`json` accepts more than JSON does, and more than the master can
serve back: ``NaN`` and ``Infinity``, ``1e999`` (read as infinity), integers
no 64-bit client holds, strings with NUL or lone surrogates (which PostgreSQL
and UTF-8 refuse), and nesting deep enough to exhaust the stack. A job stored
with any of them could not be listed any more, so :func:`parse_body` refuses
them all with a message naming the field, before anything is stored.

:class:`JSONResponse` is the other side: it renders a row stored before these
checks existed (a ``NaN`` in old metrics) as ``null`` instead of failing, so a
job already stored can always be listed.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from starlette.responses import JSONResponse as _StarletteJSONResponse

__all__ = ["MAX_DEPTH", "BodyRejected", "JSONResponse", "parse_body"]

log = logging.getLogger("agent.master")

# Our deepest body (a job's parameters with resource_limits) is 3 levels; 32 leaves room
# for any extension while keeping every walk over a body far from the recursion limit.
MAX_DEPTH = 32
# Go's int64 and PostgreSQL's bigint: what the Go master and agent can read back.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


class BodyRejected(ValueError):
    """The body is not JSON the master can store and serve; the message names the field."""


def parse_body(body: bytes) -> Any:
    """Decode a request body, refusing what could not be served back.

    Returns:
        The decoded value: dicts, lists, strings, finite floats, 64-bit integers,
        booleans and ``None``, nested at most :data:`MAX_DEPTH` levels.

    Raises:
        BodyRejected: the body is not JSON, or holds NaN/Infinity, a number out of
            range, a string with NUL or a lone surrogate, or nests too deeply;
            for example ``parameters.note is NaN or infinite; send a finite number``.
    """
    try:
        value = json.loads(body)
    except RecursionError:  # the C decoder recurses once per level; the limit stops it early
        raise BodyRejected(f"request body is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # also bad UTF-8, and integers past Python's digit limit
        raise BodyRejected(f"request body is not valid JSON: {exc}") from None
    _check(value, "", 0)
    return value


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _check(value: Any, path: str, depth: int) -> None:
    where = path or "request body"
    if depth > MAX_DEPTH:
        raise BodyRejected(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, f"a key in {where}")
            _check(item, _child(path, key), depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, _child(path, index), depth + 1)
    elif isinstance(value, str):
        _check_text(value, where)
    elif isinstance(value, float) and not math.isfinite(value):
        raise BodyRejected(f"{where} is NaN or infinite; send a finite number")
    elif isinstance(value, int) and not isinstance(value, bool) and not _INT_MIN <= value <= _INT_MAX:
        raise BodyRejected(f"{where} is out of range; integers must fit in 64 bits")


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise BodyRejected(f"{where} contains a NUL character")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BodyRejected(f"{where} contains a lone UTF-16 surrogate, which is not text") from None


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


class JSONResponse(_StarletteJSONResponse):
    """Starlette's JSON response, which renders a stored NaN as ``null`` rather than failing.

    Only rows stored before :func:`parse_body` guarded the way in can hold one;
    they are logged, so the operator can find them.
    """

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except ValueError:  # NaN/Infinity (allow_nan=False), or a lone surrogate (UTF-8)
            log.warning("A stored record holds NaN, Infinity or a lone surrogate; answering with null/escapes")
            return json.dumps(_finite(content), allow_nan=False, separators=(",", ":")).encode()
