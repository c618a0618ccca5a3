"""In-memory archives for tests: the tarballs the SDK uploads (``sourcedir.tar.gz``) and models ship in."""

from __future__ import annotations

import io
import tarfile


def targz(files: dict[str, str | bytes]) -> bytes:
    """A ``.tar.gz`` holding ``files`` (archive path -> text or bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
