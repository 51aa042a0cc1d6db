"""The node tokens an agent keeps between runs, so that a restart proves it is the same node.

The master hands out a new token at each registration and keeps only its
hash. An agent that registers again with the token of its last run (killed,
restarted by systemd, a container restart policy or Kubernetes) is recognised
as that node: the master hands back the jobs its earlier run held and lets it
take its name over at once, where any other agent must wait until the name's
holder has gone silent. The token also lets a later run deliver the results
an earlier one left in the outbox, even under another node name.

Tokens live in ``<work dir>/node-tokens/<node name>`` as ``{"node_id", "token"}``,
readable by the agent's user alone; several agents may share a work dir.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import urllib.parse
from pathlib import Path

import attrs

__all__ = ["NodeTokens"]

log = logging.getLogger(__name__)


@attrs.frozen
class NodeTokens:
    """The tokens of the nodes this work dir has run as, one file per node name."""

    directory: Path

    @classmethod
    def in_work_dir(cls, work_dir: Path) -> NodeTokens:
        return cls(Path(work_dir) / "node-tokens")

    def _path(self, address: str) -> Path:
        return self.directory / urllib.parse.quote(address, safe="")

    def _read(self, path: Path) -> dict[str, str]:
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("Cannot read the node token %s (%s); ignoring it", path, exc)
            return {}
        return record if isinstance(record, dict) else {}

    def for_address(self, address: str) -> str:
        """The token of the last run under this name, or ``""`` (first start, another work dir)."""
        return str(self._read(self._path(address)).get("token", ""))

    def for_node(self, node_id: str) -> str:
        """The token this work dir last held for ``node_id``, or ``""``."""
        for path in self.directory.glob("*"):
            record = self._read(path) if not path.name.startswith(".") else {}
            if record.get("node_id") == node_id:
                return str(record.get("token", ""))
        return ""

    def save(self, address: str, node_id: str, token: str) -> None:
        """Keep the token of this run, atomically and mode 0600 from the start: it is a credential."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(address)
        temporary = path.with_name(f".{path.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump({"node_id": node_id, "token": token}, file)
        os.replace(temporary, path)
