"""The simulated Files API's storage: uploaded batch inputs and the batches' output files.

Files belong to the organization that uploaded them (or whose batch wrote them): another
organization neither sees nor reads them, as on the real API.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

from throttle.testing.sim_batch_input import BatchInput


def object_id(prefix: str, *parts: object) -> str:
    """Return a real-looking id, e.g. ``file-3f9a...``, the same for the same ``parts``."""
    digest = hashlib.sha256(" ".join(map(str, parts)).encode()).hexdigest()
    return f"{prefix}{digest[:24]}"


@dataclass(slots=True)
class StoredFile:
    """One file on the simulated server.

    Attributes:
        id: ``file-...``.
        org: the organization that owns it.
        filename: the name it was uploaded (or written) with.
        purpose: ``"batch"`` for inputs, ``"batch_output"`` for what batches write.
        created_at: simulated Unix seconds.
        content: its bytes.
        batch_input: the parsed requests of a ``"batch"`` file.
    """

    id: str
    org: str
    filename: str
    purpose: str
    created_at: int
    content: bytes
    batch_input: BatchInput | None = None

    def as_object(self) -> dict[str, Any]:
        """Return the real API's ``file`` object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "expires_at": None,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


class FileStore:
    """Every file on the simulated server, by id.

    Args:
        seed: makes the ids of one server differ from another's with another seed.
    """

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._files: dict[str, StoredFile] = {}
        self._count = itertools.count(1)

    def __repr__(self) -> str:
        return f"FileStore(files={len(self._files)})"

    def add(
        self,
        org: str,
        filename: str,
        purpose: str,
        content: bytes,
        *,
        created_at: int,
        batch_input: BatchInput | None = None,
    ) -> StoredFile:
        """Store a new file and return it."""
        file_id = object_id("file-", self._seed, "file", next(self._count))
        stored = StoredFile(file_id, org, filename, purpose, created_at, content, batch_input)
        self._files[file_id] = stored
        return stored

    def get(self, org: str, file_id: str) -> StoredFile | None:
        """Return ``org``'s file ``file_id``, or ``None`` (the real API's 404)."""
        stored = self._files.get(file_id)
        return stored if stored is not None and stored.org == org else None

    def delete(self, org: str, file_id: str) -> bool:
        """Delete ``org``'s file ``file_id``; return whether there was one."""
        if self.get(org, file_id) is None:
            return False
        del self._files[file_id]
        return True

    def listing(self, org: str, purpose: str | None, *, newest_first: bool) -> list[StoredFile]:
        """Return ``org``'s files (of ``purpose``, if given) in upload order or its reverse."""
        files = [
            f
            for f in self._files.values()
            if f.org == org and (purpose is None or f.purpose == purpose)
        ]
        return files[::-1] if newest_first else files
