"""Reader positions on disk: written atomically, read back on restart."""

from __future__ import annotations

import json
import os
import threading
from typing import Callable, Optional

# Runners finalize bundles on several threads (Flink: after each completed
# checkpoint, possibly for several bundles at once and out of order).
_LOCK = threading.Lock()


class Checkpoint:
    """A JSON file holding a reader's committed positions.

    ``save`` writes a temporary file and renames it over the old one, so a
    crash leaves either the previous or the new positions, never half of
    each. ``path`` None keeps positions in memory only.
    """

    def __init__(self, path: Optional[str], source: str) -> None:
        self.path, self._source = path, source

    def load(self) -> dict:
        if not self.path or not os.path.exists(self.path):
            return {}
        with open(self.path, encoding="utf-8") as handle:
            stored = json.load(handle)
        if stored.get("source") != self._source:
            raise ValueError(f"checkpoint {self.path} belongs to {stored.get('source')}, "
                             f"not {self._source}: remove it or pick another --checkpoint")
        return stored.get("positions", {})

    def save(self, positions: dict,
             merge: Optional[Callable[[dict, dict], dict]] = None) -> None:
        """Write ``positions``; with ``merge``, write ``merge(stored, positions)``
        instead, so a late commit of an older bundle cannot move positions back."""
        if not self.path:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with _LOCK:
            if merge is not None:
                positions = merge(self.load(), positions)
            temporary = f"{self.path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump({"source": self._source, "positions": positions}, handle,
                          sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
