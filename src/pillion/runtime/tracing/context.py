"""W3C trace context: the ``traceparent`` header, span ids, the current span.

Parsing follows the W3C Trace Context rules a receiver must apply: a version other
than ``ff``; version ``00`` exactly 55 characters, a later version at least that with
a ``-`` after the flags; lower-case hex; trace and span ids not all zeros. Anything
else is no parent at all, so the request starts a new trace (what the spec asks).
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from random import randbytes

__all__ = [
    "MAX_TRACESTATE",
    "SpanContext",
    "current",
    "new_root_ids",
    "new_span_id",
    "new_trace_id",
    "parse_traceparent",
]

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
MAX_TRACESTATE = 512  # Dapr's limit: a longer tracestate is not propagated


class SpanContext:
    """What crosses process boundaries: trace id, span id, the sampled flag, tracestate."""

    __slots__ = ("sampled", "span_id", "trace_id", "tracestate")

    def __init__(self, trace_id: str, span_id: str, sampled: bool, tracestate: str = ""):
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.tracestate = tracestate

    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def __repr__(self) -> str:
        return f"SpanContext({self.traceparent()!r}, tracestate={self.tracestate!r})"


def parse_traceparent(value: bytes | str | None, tracestate: bytes | str | None = None) -> SpanContext | None:
    """The parent a ``traceparent`` header names, or None when it is absent or invalid."""
    if not value:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    value = value.strip(" \t")
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if len(value) != 55 and (version == "00" or value[55] != "-"):
        return None
    state = ""
    if tracestate:
        state = tracestate.decode("latin-1") if isinstance(tracestate, bytes) else tracestate
        state = state.strip(" \t")
        if len(state) > MAX_TRACESTATE:
            state = ""
    return SpanContext(trace_id, span_id, bool(int(flags, 16) & 1), state)


def new_trace_id() -> str:
    # random.randbytes (the Mersenne Twister, seeded from os.urandom) rather than os.urandom: no
    # system call per id, which matters at tens of thousands of spans a second. Ids must be
    # unique, not secret.
    trace_id = randbytes(16).hex()
    return trace_id if trace_id != _ZERO_TRACE else new_trace_id()


def new_span_id() -> str:
    span_id = randbytes(8).hex()
    return span_id if span_id != _ZERO_SPAN else new_span_id()


def new_root_ids() -> tuple[str, str]:
    """A new trace id and span id, from one call."""
    ids = randbytes(24).hex()
    trace_id, span_id = ids[:32], ids[32:]
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return new_root_ids()
    return trace_id, span_id


# The span of the request or call being handled, when it is sampled (else unset: None).
current: ContextVar = ContextVar("pillion_current_span", default=None)
