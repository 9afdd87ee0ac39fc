"""Segment files of the ingest log (:mod:`avila.storage.ingest_log`): their names and reading
their frames.

A segment is named by the log position of its first byte (``00000000000000000000.seg``); a frame
is ``<u32 length><u32 crc32 of payload>`` followed by the payload. A segment is read from its
start to the first frame that is incomplete or fails its checksum, or to the next segment's base.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

HEADER = struct.Struct("<II")
SUFFIX = ".seg"


def segment_path(directory: Path, base: int) -> Path:
    return directory / f"{base:020d}{SUFFIX}"


def segment_bases(directory: Path) -> list[int]:
    bases = []
    for entry in os.listdir(directory):
        if entry.endswith(SUFFIX) and entry[: -len(SUFFIX)].isdigit():
            bases.append(int(entry[: -len(SUFFIX)]))
    return sorted(bases)


def read_frames(
    directory: Path, start: int, end: int | None = None, max_bytes: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """``(end position, payload)`` of each valid frame from log position ``start`` (a frame
    boundary) up to ``end`` (default: the end of valid data). A segment is read to its first
    torn or corrupt frame, then reading continues at the next segment. ``max_bytes`` stops after
    the frame that reaches it (so one huge frame is still read)."""
    consumed = 0
    bases = segment_bases(directory)
    for i, base in enumerate(bases):
        following = bases[i + 1] if i + 1 < len(bases) else None
        if following is not None and following <= start:
            continue
        if end is not None and base >= end:
            return
        position = max(start, base)
        limit = following
        if end is not None:
            limit = end if limit is None else min(limit, end)
        try:
            f = open(segment_path(directory, base), "rb", buffering=1 << 20)  # noqa: SIM115
        except FileNotFoundError:
            continue
        with f:
            f.seek(position - base)
            while limit is None or position < limit:
                header = f.read(HEADER.size)
                if len(header) < HEADER.size:
                    break
                length, crc = HEADER.unpack(header)
                if length == 0:
                    break
                payload = f.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    break
                position += HEADER.size + length
                yield position, payload
                consumed += HEADER.size + length
                if max_bytes is not None and consumed >= max_bytes:
                    return
        if end is not None and position >= end:
            return
