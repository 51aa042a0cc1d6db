"""The web dashboard the master serves at ``/`` and ``/ui/...``.

General layout: :mod:`.routes` is the Starlette side (pages, forms, downloads,
server-sent events), a client of the master's own API in the same process;
:mod:`.views` and :mod:`.sessions` are plain code it calls (what a page shows,
signed session cookies); :mod:`.feed` notes the writes the master accepts,
to wake pages and keep what the store does not (CPU loads, progress history).
Templates and static files ship in the package; nothing is fetched from elsewhere.
"""

from .routes import Dashboard as Dashboard

__all__ = ["Dashboard"]
