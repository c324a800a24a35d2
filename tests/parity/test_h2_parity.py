"""The compiled HTTP/2 connection and its pure twin: same events, same bytes out, same errors.

Hypothesis writes scripts of client frames (well-formed requests and arbitrary frames: random
types, flags, stream ids, lengths, paddings, SETTINGS values, WINDOW_UPDATE increments, header
blocks from one hpack encoder split over CONTINUATION, plain garbage), cut at random offsets into
``receive`` calls and interleaved with the server's ``send_*`` calls. Both twins run each script
side by side; after every step the events, ``take()`` bytes, the H2Error code (or none), the
return value, ``closed`` and ``open_streams()`` must be equal. Feeding goes on after an error,
so the state an error leaves behind is compared too.
"""

from __future__ import annotations

import inspect
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

hpack = pytest.importorskip("hpack", reason="the grpc extra (pip install 'pillion[grpc]': hpack) is not installed")

from pillion._testing import import_twin  # noqa: E402
from pillion.grpcapi.h2_errors import H2Error  # noqa: E402

PURE = import_twin("h2", "pure")  # the specification, always importable; builds the inputs
F = PURE  # frame types, flags and codes (the same values in both twins, checked below)


@pytest.fixture(scope="module")
def twins():
    return import_twin("h2", "pure"), import_twin("h2", "compiled")


def _public(cls):
    return sorted(name for name in dir(cls) if not name.startswith("_"))


def _parameters(function, skip: int):
    return [(p.name, p.kind, p.default) for p in list(inspect.signature(function).parameters.values())[skip:]]


def test_same_names_constants_and_signatures(twins):
    pure, compiled = twins
    assert pure.__all__ == compiled.__all__
    for name in pure.__all__:
        if name not in ("H2Connection", "frame", "encode_headers"):
            assert getattr(pure, name) == getattr(compiled, name), name
    assert pure.H2Error is compiled.H2Error is H2Error
    assert compiled.H2Connection.__module__ == "pillion._ext.h2"
    assert _public(pure.H2Connection()) == _public(compiled.H2Connection()) == [
        "abandon", "closed", "goaway", "open_streams", "receive", "reset", "send_block", "send_data",
        "send_headers", "send_trailers", "send_trailers_block", "send_unary", "take",
    ]  # fmt: skip
    for name in _public(pure.H2Connection()):
        if name != "closed":
            assert _parameters(getattr(pure.H2Connection, name), 1) == _parameters(
                getattr(compiled.H2Connection, name), 1
            ), name
    for name in ("frame", "encode_headers"):
        assert _parameters(getattr(pure, name), 0) == _parameters(getattr(compiled, name), 0), name


def test_a_fresh_connection_and_the_helpers_agree(twins):
    pure, compiled = twins
    assert pure.H2Connection().take() == compiled.H2Connection().take()
    fields = [(b":status", b"200"), (b"x", b"y" * 200), (b":status", b"404"), (b"k" * 130, b"")]
    assert pure.encode_headers(fields) == compiled.encode_headers(fields)
    assert pure.frame(1, 4, 3, b"abc") == compiled.frame(1, 4, 3, b"abc")
    for bad in ((1, 256, 3), (1, 0, 2**32), (1, 0, -1)):
        with pytest.raises(struct.error):
            pure.frame(*bad)
        with pytest.raises(struct.error):
            compiled.frame(*bad)


# -- client frames ------------------------------------------------------------------------------

FIELDS = [
    [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/dapr.proto.runtime.v1.Dapr/GetState"),
     (b":authority", b"x"), (b"content-type", b"application/grpc"), (b"te", b"trailers")],
    [(b":method", b"POST"), (b":path", b"/a"), (b"x-meta", b"v" * 300)],
    [(b"grpc-timeout", b"1S"), (b"x-trailer", b"1")],
    [(b"x-big", b"b" * 5000)],
    [],
]
STREAMS = st.one_of(st.sampled_from([0, 1, 2, 3, 5, 7, 9, 11]), st.integers(0, 2**31 - 1))
WIRE_FLAGS = st.one_of(
    st.sampled_from([0, F.END_STREAM, F.END_HEADERS, F.END_HEADERS | F.END_STREAM, F.PADDED | F.END_HEADERS,
                     F.PRIORITY_FLAG | F.END_HEADERS, F.PADDED | F.PRIORITY_FLAG | F.END_HEADERS | F.END_STREAM]),
    st.integers(0, 255),
)


def _settings_payload(pairs) -> bytes:
    return b"".join(struct.pack(">HI", key, value) for key, value in pairs)


setting_pairs = st.lists(
    st.tuples(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 0xFFFF]),
              st.one_of(st.sampled_from([0, 1, 100, 16383, 16384, 20000, 65535, 1 << 20, 2**31 - 1, 2**31,
                                         16777215, 16777216, 2**32 - 1]), st.integers(0, 2**32 - 1))),
    max_size=4,
)


@st.composite
def header_frames(draw, encoder: hpack.Encoder, stream: int, chaos: bool) -> bytes:
    """One header block (from the shared encoder; with ``chaos`` also raw bytes) as HEADERS [+ CONTINUATION...]."""
    kind = draw(st.sampled_from(["encoded", "encoded", "encoded", "indexing", "indexed", "garbage"])) if chaos else "encoded"
    if kind == "encoded":
        if draw(st.integers(0, 9)) == 0:
            encoder.header_table_size = draw(st.sampled_from([0, 60, 256, 4096]))
        block = encoder.encode(draw(st.sampled_from(FIELDS)), huffman=draw(st.booleans()))
    elif kind == "indexing":  # literals with incremental indexing: they change the table each time
        block = b"\x40\x05x-one\x01a" if draw(st.booleans()) else bytes([0x3F, 29]) + b"\x40\x03x-a\x011"
    elif kind == "indexed":  # dynamic entries 62 and 63: valid or not, depending on the table
        block = draw(st.sampled_from([b"\xbe", b"\xbe\xbf", b"\x82\x86\xbe"]))
    else:
        block = draw(st.binary(max_size=20))
    end_stream = draw(st.booleans())
    parts = draw(st.integers(1, 3))
    cut = sorted(draw(st.lists(st.integers(0, len(block)), min_size=parts - 1, max_size=parts - 1)))
    pieces = [block[a:b] for a, b in zip([0] + cut, cut + [len(block)])]
    flags = F.END_STREAM if end_stream else 0
    first = pieces[0]
    if draw(st.integers(0, 4)) == 0:
        first = (5).to_bytes(4, "big") + b"\x10" + first
        flags |= F.PRIORITY_FLAG
    if draw(st.integers(0, 4)) == 0:
        pad = draw(st.integers(0, 8))
        first = bytes([pad]) + first + b"\x00" * pad
        flags |= F.PADDED
    out = []
    for index, piece in enumerate(pieces):
        last = F.END_HEADERS if index == len(pieces) - 1 else 0
        if index == 0:
            out.append(PURE.frame(F.HEADERS, flags | last, stream, first))
        else:
            out.append(PURE.frame(F.CONTINUATION, last, stream, piece))
    return b"".join(out)


def _opened(next_stream: list):
    """A stream the script opened (or would have), or stream 1."""
    return st.sampled_from(list(range(1, next_stream[0], 2)) or [1])


@st.composite
def client_frame(draw, encoder: hpack.Encoder, next_stream: list, chaos: bool) -> bytes:
    """Mostly frames a real client would send; with ``chaos``, also arbitrary and invalid ones."""
    choice = draw(st.integers(0, 99 if chaos else 69))
    if next_stream[0] == 1 and 25 <= choice < 70:  # nothing open yet: a request first
        choice = 0
    if choice < 25:  # a new request on the next odd stream
        stream = next_stream[0]
        next_stream[0] += 2
        wire = draw(header_frames(encoder, stream, chaos))
        if draw(st.booleans()):
            wire += PURE.frame(F.DATA, draw(st.sampled_from([0, F.END_STREAM])), stream, draw(st.binary(max_size=30)))
        return wire
    if choice < 40:  # DATA on an opened stream, maybe padded
        flags = draw(st.sampled_from([0, F.END_STREAM, F.PADDED, F.PADDED | F.END_STREAM]))
        payload = draw(st.binary(max_size=60))
        if flags & F.PADDED:
            pad = draw(st.integers(0, 10))
            payload = bytes([pad]) + payload + b"\x00" * pad
        return PURE.frame(F.DATA, flags, draw(_opened(next_stream)), payload)
    if choice < 50:  # window updates, large enough to let answers through
        stream = draw(st.one_of(st.just(0), _opened(next_stream)))
        increment = draw(st.sampled_from([1, 100, 65535, 1 << 17, 1 << 20]))
        return PURE.frame(F.WINDOW_UPDATE, 0, stream, increment.to_bytes(4, "big"))
    if choice < 55:
        values = st.sampled_from([0, 100, 16384, 20000, 65535, 1 << 20, 2**31 - 1, 16777215])
        payload = _settings_payload(draw(st.lists(st.tuples(st.sampled_from([1, 3, 4, 5, 6]), values), max_size=3)))
        return PURE.frame(F.SETTINGS, 0, 0, payload) if draw(st.integers(0, 3)) else PURE.frame(F.SETTINGS, F.ACK, 0)
    if choice < 58:  # request trailers or a reset
        stream = draw(_opened(next_stream))
        if draw(st.booleans()):
            return PURE.frame(F.RST_STREAM, 0, stream, draw(st.sampled_from([b"\x00\x00\x00\x08", b"\x00" * 4])))
        return PURE.frame(F.HEADERS, F.END_HEADERS | F.END_STREAM, stream, encoder.encode(FIELDS[2]))
    if choice < 62:
        return PURE.frame(F.PING, draw(st.sampled_from([0, F.ACK])), 0, b"12345678")
    if choice < 64:
        return PURE.frame(F.GOAWAY, 0, 0, b"\x00" * 8)
    if choice < 70:
        return PURE.frame(F.PRIORITY, 0, draw(_opened(next_stream)), b"\x00\x00\x00\x03\x10")
    # -- chaos: anything, valid or not
    if choice < 75:  # header block on any stream (trailers, reused or even ids, stream 0)
        return draw(header_frames(encoder, draw(STREAMS), chaos))
    if choice < 79:
        flags = draw(st.sampled_from([0, F.END_STREAM, F.PADDED, F.PADDED | F.END_STREAM]))
        payload = draw(st.binary(max_size=60))
        return PURE.frame(F.DATA, flags, draw(STREAMS), payload)
    if choice < 83:
        increment = draw(st.one_of(st.sampled_from([0, 2**31 - 1, 2**32 - 1]), st.integers(0, 2**32 - 1)))
        payload = increment.to_bytes(4, "big") if draw(st.integers(0, 4)) else draw(st.binary(max_size=6))
        return PURE.frame(F.WINDOW_UPDATE, 0, draw(st.sampled_from([0, 0, 1, 3, 5, 7])), payload)
    if choice < 87:
        flags = draw(st.sampled_from([0, 0, 0, F.ACK]))
        payload = _settings_payload(draw(setting_pairs))
        if draw(st.integers(0, 4)) == 0:
            payload += draw(st.binary(min_size=1, max_size=5))
        return PURE.frame(F.SETTINGS, flags, draw(st.sampled_from([0, 0, 0, 1])), payload)
    if choice < 90:
        return PURE.frame(draw(st.sampled_from([F.RST_STREAM, F.PING])), draw(WIRE_FLAGS),
                          draw(STREAMS), draw(st.sampled_from([b"\x00\x00\x00\x08", b"\x01", b"1234567", b""])))
    if choice < 92:  # oversized: only its header is sent, the length alone is the error
        return PURE.frame(0xEE, 0, 0, b"\x00" * draw(st.sampled_from([16384, 16385])))[:9]
    if choice < 98:
        return PURE.frame(draw(st.sampled_from(list(range(10)) + [0x10, 0xEE, 0xFF])), draw(WIRE_FLAGS),
                          draw(STREAMS), draw(st.binary(max_size=40)))
    return draw(st.binary(min_size=1, max_size=30))


# -- server calls -------------------------------------------------------------------------------

HEAD = PURE.encode_headers([(b":status", b"200"), (b"content-type", b"application/grpc")])
OK = PURE.encode_headers([(b"grpc-status", b"0")])
BODIES = st.one_of(st.binary(max_size=30), st.sampled_from([b"", b"\x00\x00\x00\x00\x10" + b"r" * 16]),
                   st.integers(1, 120000).map(lambda n: b"d" * n))


def server_call(next_stream: list):
    streams = st.one_of(_opened(next_stream), _opened(next_stream), _opened(next_stream), STREAMS.filter(bool))
    return st.one_of(
        st.tuples(st.just("send_headers"), streams,
                  st.sampled_from([[(b":status", b"200")], [(b"x-big", b"h" * 20000)], [(b"grpc-status", b"12")]]),
                  st.booleans()),
        st.tuples(st.just("send_block"), streams, st.sampled_from([HEAD, OK, b"", b"h" * 40000]), st.booleans()),
        st.tuples(st.just("send_data"), streams, BODIES),
        st.tuples(st.just("send_unary"), streams, st.sampled_from([HEAD, HEAD, b"h" * 17000]), BODIES,
                  st.sampled_from([OK, OK, b"t" * 17000])),
        st.tuples(st.just("send_unary"), streams, st.just(HEAD), st.binary(max_size=30), st.just(OK)),
        st.tuples(st.just("send_trailers"), streams, st.sampled_from([[(b"grpc-status", b"0")], []])),
        st.tuples(st.just("send_trailers_block"), streams, st.sampled_from([OK, b"t" * 20000])),
        st.tuples(st.just("abandon"), streams),
        st.tuples(st.just("reset"), streams, st.sampled_from([F.CANCEL, F.NO_ERROR, F.INTERNAL_ERROR])),
        st.tuples(st.just("goaway"), st.sampled_from([F.NO_ERROR, F.INTERNAL_ERROR]), st.sampled_from([b"", b"bye"])),
    )


@st.composite
def scripts(draw) -> list:
    """Steps: ("receive", [chunk, ...]) or a server call tuple."""
    encoder, next_stream, chaos = hpack.Encoder(), [1], draw(st.booleans())
    start = draw(st.sampled_from(["preface"] * 18 + ["broken", "none"]))
    wire = b""
    if start == "preface":
        pairs = setting_pairs if chaos else st.lists(st.tuples(st.sampled_from([3, 4, 5, 6]), st.sampled_from(
            [16384, 20000, 65535, 1 << 20])), max_size=3)
        wire = PURE.PREFACE + PURE.frame(F.SETTINGS, 0, 0, _settings_payload(draw(pairs)))
    elif start == "broken":
        wire = draw(st.sampled_from([PURE.PREFACE[:10] + b"X", b"GET / HTTP/1.1\r\n", b"PRI"]))
    steps = []
    for _ in range(draw(st.integers(1, 16))):
        if draw(st.integers(0, 2)):
            wire += b"".join(draw(st.lists(client_frame(encoder, next_stream, chaos), min_size=1, max_size=4)))
            cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=3)))
            steps.append(("receive", [wire[a:b] for a, b in zip([0] + cuts, cuts + [len(wire)])]))
            wire = b""
        else:
            steps.append(draw(server_call(next_stream)))
    if wire:
        steps.append(("receive", [wire]))
    return steps


def _step(conn, step, seen: list):
    """Run one step; the record to compare (headers lists by value, plus which earlier list each one is)."""
    if step[0] != "receive":
        try:
            result = getattr(conn, step[0])(*step[1:])
        except H2Error as exc:  # never expected from a server call; compared all the same
            result = ("H2Error", exc.code)
        return [("call", step[0], result, conn.take(), conn.closed, conn.open_streams())]
    records = []
    for chunk in step[1]:
        try:
            events, error = conn.receive(chunk), None
        except H2Error as exc:
            events, error = [], exc.code
        shown = []
        for event in events:
            if event[0] == "headers":  # the cache: the same list again, or a new one
                same = [i for i, old in enumerate(seen) if old is event[2]]
                seen.append(event[2])
                shown.append((event, same))
            else:
                shown.append((event, None))
        records.append(("receive", shown, error, conn.take(), conn.closed, conn.open_streams()))
    return records


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scripts())
def test_same_events_bytes_and_errors_for_any_script(twins, script):
    pure, compiled = twins
    connections = pure.H2Connection(), compiled.H2Connection()
    seen = ([], [])
    assert connections[0].take() == connections[1].take()
    for number, step in enumerate(script):
        records = [_step(conn, step, seen[i]) for i, conn in enumerate(connections)]
        assert records[0] == records[1], f"step {number}: {step[0]}"
        assert connections[0]._send_window == connections[1]._send_window, f"step {number}"


def test_many_unary_calls_in_one_chunk_each(twins):
    """The hot path over many streams: cache hits, stream ids past the small-int range, the output buffer."""
    runs = []
    for module in twins:
        conn, encoder = module.H2Connection(), hpack.Encoder()
        out = [conn.receive(PURE.PREFACE + PURE.frame(F.SETTINGS, 0, 0)
                            + PURE.frame(F.WINDOW_UPDATE, 0, 0, (2**31 - 65536).to_bytes(4, "big"))), conn.take()]
        lists = []
        for stream in range(1, 2000, 2):
            block = encoder.encode(FIELDS[0])
            events = conn.receive(PURE.frame(F.HEADERS, F.END_HEADERS, stream, block)
                                  + PURE.frame(F.DATA, F.END_STREAM, stream, b"\x00\x00\x00\x00\x0f" + b"q" * 15))
            lists.append(events[0][2])
            out.append(events)
            out.append(conn.send_unary(stream, HEAD, b"\x00\x00\x00\x00\x10" + b"r" * 16, OK))
            out.append(conn.take())
        out.append(conn.open_streams())
        runs.append(out)
        assert all(later is lists[1] for later in lists[2:])  # one decode, then the cached list every time
    assert runs[0] == runs[1]
