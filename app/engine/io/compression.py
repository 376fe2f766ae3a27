"""Compressed crystal files: gzip, bzip2 and xz, recognised by suffix and by their magic bytes."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma

from app.engine.core.errors import StructureReadError

#: Suffixes of compressed files, stripped to find the format of what is inside (``POSCAR.xz``).
COMPRESSION_SUFFIXES: tuple[str, ...] = (".gz", ".bz2", ".xz", ".lzma")
_MAGIC = ((b"\x1f\x8b", "gzip", lambda f: gzip.GzipFile(fileobj=f)), (b"BZh", "bzip2", bz2.BZ2File), (b"\xfd7zXZ\x00", "xz", lzma.LZMAFile))


def strip_compression_suffix(name: str) -> str:
    """``"POSCAR.xz"`` -> ``"POSCAR"``; names without a compression suffix are returned unchanged."""
    lower = name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def decompress(data: bytes, max_bytes: int) -> tuple[bytes, str | None]:
    """Unpack ``data`` if its first bytes mark it as gzip, bzip2 or xz.

    Parameters
    ----------
    data : bytes
        The file's bytes.
    max_bytes : int
        Largest unpacked size accepted (a small archive can unpack to gigabytes).

    Returns
    -------
    (bytes, str or None)
        The unpacked bytes and the compression's name, or ``data`` and None when not compressed.

    Raises
    ------
    StructureReadError
        Truncated or corrupt archives, or more than ``max_bytes`` once unpacked.
    """
    for magic, label, opener in _MAGIC:
        if data.startswith(magic):
            try:
                with opener(io.BytesIO(data)) as stream:
                    unpacked = stream.read(max_bytes + 1)
            except EOFError:
                raise StructureReadError(f"the {label}-compressed file is truncated.") from None
            except (OSError, lzma.LZMAError, ValueError) as exc:
                raise StructureReadError(f"the {label}-compressed file is corrupt ({exc}).") from None
            if len(unpacked) > max_bytes:
                raise StructureReadError(f"the file unpacks to more than the {max_bytes / 1e6:g} MB limit.")
            return unpacked, label
    return data, None
