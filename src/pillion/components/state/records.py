"""The built-in stores' record layout and write rules: pure functions, no I/O.

Record (one LMDB value) = fixed header + content type + value bytes::

    offset 0   u8   record format (RECORD_FORMAT, 1)
    offset 1   u64  version: the item's ETag as a decimal string
    offset 9   f64  expire time, epoch seconds; 0.0 = never
    offset 17  u16  content type length in bytes (UTF-8)
    offset 19  ...  content type, then the value to the end

Little-endian, no padding. Kept apart so that a compiled twin can replace it later.
``check_write`` holds the ETag / first-write rules every built-in store shares.
"""

from __future__ import annotations

import struct

from . import DeleteRequest, ETagError, SetRequest

RECORD_FORMAT = 1
_HEADER = struct.Struct("<BQdH")
HEADER_SIZE = _HEADER.size
MAX_CONTENT_TYPE = 0xFFFF
MAX_VERSION = 2**64 - 1

# Dapr's own texts (contrib state/errors.go), so the API layer can pass them through.
MSG_MISMATCH = "possible etag mismatch. error from state store"
MSG_INVALID = "invalid etag value"


def pack(version: int, expire: float, content_type: str | None, value: bytes) -> bytes:
    """One record; raises ValueError for a content type over 64 KiB."""
    ct = content_type.encode() if content_type else b""
    if len(ct) > MAX_CONTENT_TYPE:
        raise ValueError(f"content type longer than {MAX_CONTENT_TYPE} bytes")
    return _HEADER.pack(RECORD_FORMAT, version, expire, len(ct)) + ct + value


def unpack_header(record: bytes) -> tuple[int, float]:
    """``(version, expire)``; raises ValueError for an unknown or short record."""
    if len(record) < HEADER_SIZE or record[0] != RECORD_FORMAT:
        raise ValueError("not a pillion state record (format 1)")
    _, version, expire, _ = _HEADER.unpack_from(record)
    return version, expire


def unpack(record: bytes) -> tuple[int, float, str | None, bytes]:
    """``(version, expire, content_type or None, value)``."""
    if len(record) < HEADER_SIZE or record[0] != RECORD_FORMAT:
        raise ValueError("not a pillion state record (format 1)")
    _, version, expire, ct_len = _HEADER.unpack_from(record)
    end = HEADER_SIZE + ct_len
    ct = record[HEADER_SIZE:end].decode() if ct_len else None
    return version, expire, ct, record[end:]


def is_live(expire: float, now: float) -> bool:
    return expire == 0.0 or expire > now


def expire_at(ttl_seconds: int | None, now: float) -> float:
    """The expire time for a TTL: None, 0 and negative values (-1) mean never."""
    return now + ttl_seconds if ttl_seconds is not None and ttl_seconds > 0 else 0.0


def parse_etag(key: str, etag: str) -> int:
    """A version from an ETag; ETagError("invalid") unless it is a decimal u64."""
    if not (etag.isascii() and etag.isdigit() and len(etag) <= 20) or int(etag) > MAX_VERSION:
        raise ETagError("invalid", key, MSG_INVALID)
    return int(etag)


def check_write(op: SetRequest | DeleteRequest, current: int | None) -> None:
    """Raise ETagError unless ``op`` may apply to a key whose live version is ``current``.

    An empty ETag counts as none (as in Dapr's in-memory store). With an ETag the
    version must match, so a missing key is a mismatch. Without one, a first-write
    set fails on a live key; deletes ignore first-write.
    """
    if op.etag:
        if parse_etag(op.key, op.etag) != current:
            raise ETagError("mismatch", op.key, MSG_MISMATCH)
    elif op.first_write and current is not None and isinstance(op, SetRequest):
        raise ETagError("mismatch", op.key, MSG_MISMATCH)
