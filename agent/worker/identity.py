"""The node token an agent keeps between runs, so that a restart proves it is the same node.

The master hands out a new token at each registration and keeps only its
hash. An agent that registers again with the token of its last run (killed,
restarted by systemd, a container restart policy or Kubernetes) is recognised
as that node: the master hands back the jobs its earlier run held and lets it
take its name over at once, where any other agent must wait until the name's
holder has gone silent.

Tokens live in ``<work dir>/node-tokens/<node name>``, readable by the agent's
user alone; several agents may share a work dir as long as their names differ.
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.parse
from pathlib import Path

import attrs

__all__ = ["TokenFile"]

log = logging.getLogger(__name__)


@attrs.frozen
class TokenFile:
    """The token file of one node name."""

    path: Path

    @classmethod
    def for_node(cls, work_dir: Path, address: str) -> TokenFile:
        return cls(Path(work_dir) / "node-tokens" / urllib.parse.quote(address, safe=""))

    def load(self) -> str:
        """The token of the last run, or ``""`` when there is none (first start, another work dir)."""
        try:
            return self.path.read_text().strip()
        except FileNotFoundError:
            return ""
        except OSError as exc:
            log.warning("Cannot read the node token %s (%s); registering as a new run", self.path, exc)
            return ""

    def save(self, token: str) -> None:
        """Write ``token`` atomically, mode 0600 from the start: it is a credential."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(token)
        os.replace(temporary, self.path)
