"""Go ``time.ParseDuration`` and Kubernetes byte quantities, as resource files and daprd flags write them."""

from __future__ import annotations

import re

_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_MAX_NS = 2**63 - 1


def parse_duration(text: str) -> float:
    """Seconds in a Go duration such as "1h2m3.5s" or "300ms"; ValueError when Go would refuse it.

    Works in integer nanoseconds, truncating like Go, so limits and rounding agree
    with daprd.
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}")
    rest = text
    sign = 1
    if rest[:1] in ("-", "+"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    pos = 0
    while pos < len(rest):
        m = _PART.match(rest, pos)
        if m is None or (not m.group(1) and not m.group(2)):
            raise ValueError(f"invalid duration {text!r}")
        whole, frac, unit = m.group(1), m.group(2) or "", m.group(3)
        scale = _UNIT_NS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        if total > _MAX_NS:
            raise ValueError(f"invalid duration {text!r}: out of range")
        pos = m.end()
    return sign * total / 1e9


_QUANTITY = re.compile(r"^\s*(\d+)\s*(Ki|Mi|Gi|K|M|G|k)?\s*$")
_QUANTITY_UNITS = {None: 1, "K": 1000, "k": 1000, "M": 10**6, "G": 10**9, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def parse_quantity(text: str) -> int:
    """Bytes in a Kubernetes-style quantity such as ``4Mi``, ``512Ki`` or ``1048576``."""
    match = _QUANTITY.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a size like 4Mi, 512Ki or 1048576")
    return int(match.group(1)) * _QUANTITY_UNITS[match.group(2)]
