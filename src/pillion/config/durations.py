"""Go ``time.ParseDuration`` for resource files, which write timeouts as Go durations."""

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
