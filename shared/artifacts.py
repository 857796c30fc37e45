"""Content-addressed artifact store: model bytes filed under their sha256."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol


class ArtifactNotFound(LookupError):
    """No artifact with that digest is stored."""


class ArtifactStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store bytes; return their sha256 (storing the same bytes twice is a no-op)."""
        ...

    def get(self, digest: str) -> bytes:
        """The bytes stored under a digest, verified against it."""
        ...

    def delete(self, digest: str) -> None:
        """Forget an artifact nothing needs any more (a missing one is no error)."""
        ...


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileArtifactStore:
    """Artifacts as files `<root>/<aa>/<digest>`, written atomically (temp file + rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ArtifactNotFound(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = sha256(data)
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)
        return digest

    def get(self, digest: str) -> bytes:
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFound(f"no artifact {digest}") from None
        if sha256(data) != digest:
            raise ArtifactNotFound(f"artifact {digest} is corrupt (its bytes hash differently)")
        return data

    def delete(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)
