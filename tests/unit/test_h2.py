"""Unit tests of the sans-IO HTTP/2 server side (pillion.grpcapi.h2), driven with frames built here.

The server's output is parsed back into frames by a small parser of our own, so every check is
on the bytes a real client would read. Every test runs against both twins (``pillion._pure.h2`` and
``pillion._ext.h2``): the ``twin`` fixture rebinds ``h2``, ``H2Connection`` and ``frame`` below.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

hpack = pytest.importorskip("hpack", reason="the grpc extra (pip install 'pillion[grpc]': hpack) is not installed")

from pillion._testing import import_twin  # noqa: E402
from pillion.grpcapi import h2  # noqa: E402 - after the importorskip; rebound to the twin under test
from pillion.grpcapi.h2 import (  # noqa: E402 - the constants are the same in both twins
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    H2Connection,
    H2Error,
    frame,
)



@pytest.fixture(scope="module", autouse=True, params=["pure", "compiled"])
def twin(request):
    """Run the module's tests against one twin: ``h2``, ``H2Connection`` and ``frame`` are its own."""
    module = import_twin("h2", request.param)  # skips (fails under CI) when pillion._ext.h2 is not built
    saved = {name: globals()[name] for name in ("h2", "H2Connection", "frame")}
    globals().update(h2=module, H2Connection=module.H2Connection, frame=module.frame)
    yield module
    globals().update(saved)


REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/dapr.proto.runtime.v1.Dapr/GetState"),
           (b":authority", b"localhost"), (b"content-type", b"application/grpc"), (b"te", b"trailers")]


# -- helpers -----------------------------------------------------------------------------------

def parse(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream, payload) of every frame in ``data``, which must hold whole frames only."""
    frames, position = [], 0
    while position < len(data):
        assert len(data) - position >= 9, "a truncated frame header"
        length = int.from_bytes(data[position:position + 3], "big")
        kind, flags = data[position + 3], data[position + 4]
        stream = int.from_bytes(data[position + 5:position + 9], "big") & 0x7FFFFFFF
        payload = data[position + 9:position + 9 + length]
        assert len(payload) == length, "a truncated frame payload"
        frames.append((kind, flags, stream, payload))
        position += 9 + length
    return frames


def settings_frame(**values) -> bytes:
    keys = {"header_table_size": 1, "enable_push": 2, "max_concurrent_streams": 3, "initial_window_size": 4,
            "max_frame_size": 5, "max_header_list_size": 6}
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", keys[k], v) for k, v in values.items()))


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, increment.to_bytes(4, "big"))


def started(**client_settings) -> H2Connection:
    """A connection past the preface and the client's SETTINGS, with its output so far taken."""
    conn = H2Connection()
    assert conn.receive(PREFACE + settings_frame(**client_settings)) == []
    conn.take()
    return conn


def open_stream(conn: H2Connection, encoder: hpack.Encoder, stream: int, end_stream: bool = True) -> list:
    flags = END_HEADERS | (END_STREAM if end_stream else 0)
    return conn.receive(frame(HEADERS, flags, stream, encoder.encode(REQUEST)))


def goaway_code(out: bytes) -> int:
    goaways = [payload for kind, _, _, payload in parse(out) if kind == GOAWAY]
    assert len(goaways) == 1
    return int.from_bytes(goaways[0][4:8], "big")


def data_frames(frames, stream=None) -> list[bytes]:
    return [p for kind, _, s, p in frames if kind == DATA and (stream is None or s == stream)]


def window_updates(frames) -> list[tuple[int, int]]:
    return [(s, int.from_bytes(p, "big")) for kind, _, s, p in frames if kind == WINDOW_UPDATE]


# -- 1. connection start ---------------------------------------------------------------------------

def test_server_opens_with_settings_and_connection_window_update():
    frames = parse(H2Connection().take())
    assert [f[0] for f in frames] == [SETTINGS, WINDOW_UPDATE]
    _, flags, stream, payload = frames[0]
    assert (flags, stream) == (0, 0) and len(payload) % 6 == 0
    values = dict(struct.unpack_from(">HI", payload, i) for i in range(0, len(payload), 6))
    assert values == {3: h2.MAX_STREAMS, 4: h2.RECEIVE_WINDOW, 6: h2.MAX_HEADER_BLOCK}
    assert window_updates(frames) == [(0, h2.RECEIVE_WINDOW - h2.DEFAULT_WINDOW)]


def test_client_settings_get_an_ack_and_an_ack_gets_nothing():
    conn = H2Connection()
    conn.take()
    conn.receive(PREFACE + settings_frame(max_concurrent_streams=100))
    assert parse(conn.take()) == [(SETTINGS, ACK, 0, b"")]
    conn.receive(frame(SETTINGS, ACK, 0))
    assert conn.take() == b""


def test_ping_is_answered_with_the_same_bytes_and_a_ping_ack_is_not():
    conn = started()
    assert conn.receive(frame(PING, 0, 0, b"\x01\x02\x03\x04\x05\x06\x07\x08")) == []
    assert parse(conn.take()) == [(PING, ACK, 0, b"\x01\x02\x03\x04\x05\x06\x07\x08")]
    conn.receive(frame(PING, ACK, 0, b"abcdefgh"))
    assert conn.take() == b""


def test_preface_and_frames_split_over_many_receive_calls():
    conn = H2Connection()
    conn.take()
    encoder = hpack.Encoder()
    wire = PREFACE + settings_frame() + frame(HEADERS, END_HEADERS | END_STREAM, 1, encoder.encode(REQUEST))
    events = []
    for i in range(len(wire)):
        events += conn.receive(wire[i:i + 1])
    assert [e[:2] for e in events] == [("headers", 1)]
    assert events[0][2] == REQUEST
    assert parse(conn.take()) == [(SETTINGS, ACK, 0, b"")]


@pytest.mark.parametrize("wire", [b"GET / HTTP/1.1\r\n", b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n" + b"\x00" * 9, b"X"])
def test_a_wrong_preface_raises_with_goaway_protocol_error(wire):
    conn = H2Connection()
    conn.take()
    with pytest.raises(H2Error) as info:
        conn.receive(wire)
    assert info.value.code == h2.PROTOCOL_ERROR
    assert goaway_code(conn.take()) == h2.PROTOCOL_ERROR
    assert conn.closed


# -- 2. requests -----------------------------------------------------------------------------------

def test_headers_with_end_stream():
    conn, encoder = started(), hpack.Encoder()
    block = encoder.encode(REQUEST)
    events = conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    assert events == [("headers", 1, REQUEST, True, block)]
    assert conn.open_streams() == 1  # the response is still to come


def test_headers_without_end_stream_then_data_returns_the_window():
    conn, encoder = started(), hpack.Encoder()
    events = open_stream(conn, encoder, 1, end_stream=False)
    assert events[0][0] == "headers" and events[0][3] is False
    conn.take()
    events = conn.receive(frame(DATA, 0, 1, b"hello") + frame(DATA, 0, 1, b"world!"))
    assert events == [("data", 1, b"hello", False), ("data", 1, b"world!", False)]
    # a stream WINDOW_UPDATE per DATA frame; the connection's comes once half its window is used
    assert window_updates(parse(conn.take())) == [(1, 5), (1, 6)]
    events = conn.receive(frame(DATA, END_STREAM, 1, b"end"))
    assert events == [("data", 1, b"end", True)]
    assert window_updates(parse(conn.take())) == []  # the stream has ended: no stream update


def test_padded_data_counts_the_padding_for_flow_control():
    conn, encoder = started(), hpack.Encoder()
    open_stream(conn, encoder, 1, end_stream=False)
    conn.take()
    payload = bytes([4]) + b"abc" + b"\x00" * 4
    assert conn.receive(frame(DATA, PADDED, 1, payload)) == [("data", 1, b"abc", False)]
    assert window_updates(parse(conn.take())) == [(1, 8)]


def test_empty_data_needs_no_window_update():
    conn, encoder = started(), hpack.Encoder()
    open_stream(conn, encoder, 1, end_stream=False)
    conn.take()
    assert conn.receive(frame(DATA, END_STREAM, 1)) == [("data", 1, b"", True)]
    assert conn.take() == b""


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("priority", [False, True])
def test_headers_with_padding_and_priority(padded, priority):
    conn, encoder = started(), hpack.Encoder()
    block = encoder.encode(REQUEST)
    payload, flags = block, END_HEADERS | END_STREAM
    if priority:
        payload = (3).to_bytes(4, "big") + b"\x10" + payload
        flags |= PRIORITY_FLAG
    if padded:
        payload = b"\x06" + payload + b"\x00" * 6
        flags |= PADDED
    assert conn.receive(frame(HEADERS, flags, 1, payload)) == [("headers", 1, REQUEST, True, block)]


def test_headers_split_into_continuation_frames():
    conn, encoder = started(), hpack.Encoder()
    fields = REQUEST + [(b"x-meta", b"v" * 500)]
    block = encoder.encode(fields)
    parts = [block[:10], block[10:200], block[200:]]
    wire = (frame(HEADERS, END_STREAM, 1, parts[0]) + frame(CONTINUATION, 0, 1, parts[1])
            + frame(CONTINUATION, END_HEADERS, 1, parts[2]))
    assert conn.receive(wire[:20]) == []
    assert conn.receive(wire[20:]) == [("headers", 1, fields, True, block)]


def test_request_trailers_end_the_stream():
    conn, encoder = started(), hpack.Encoder()
    open_stream(conn, encoder, 1, end_stream=False)
    events = conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 1, encoder.encode([(b"x-trailer", b"1")])))
    assert events == [("data", 1, b"", True)]


def test_priority_frames_and_unknown_types_are_ignored():
    conn = started()
    assert conn.receive(frame(PRIORITY, 0, 5, b"\x00\x00\x00\x03\x10") + frame(0xEE, 0xFF, 7, b"whatever")) == []
    assert conn.take() == b""


# -- 3. responses and flow control ------------------------------------------------------------------

def test_response_headers_data_trailers_in_order():
    conn, encoder = started(), hpack.Encoder()
    open_stream(conn, encoder, 1)
    conn.take()
    conn.send_block(1, h2.encode_headers([(b":status", b"200"), (b"content-type", b"application/grpc")]))
    conn.send_data(1, b"\x00\x00\x00\x00\x02hi")
    conn.send_trailers_block(1, h2.encode_headers([(b"grpc-status", b"0")]))
    frames = parse(conn.take())
    assert [(k, f, s) for k, f, s, _ in frames] == [(HEADERS, END_HEADERS, 1), (DATA, 0, 1),
                                                     (HEADERS, END_HEADERS | END_STREAM, 1)]
    decoder = hpack.Decoder()
    assert decoder.decode(frames[0][3], raw=True) == [(b":status", b"200"), (b"content-type", b"application/grpc")]
    assert frames[1][3] == b"\x00\x00\x00\x00\x02hi"
    assert decoder.decode(frames[2][3], raw=True) == [(b"grpc-status", b"0")]
    assert conn.open_streams() == 0


def test_trailers_only_response_with_send_headers_end_stream():
    conn, encoder = started(), hpack.Encoder()
    open_stream(conn, encoder, 1)
    conn.take()
    conn.send_headers(1, [(b":status", b"200"), (b"grpc-status", b"12")], end_stream=True)
    frames = parse(conn.take())
    assert [(k, f) for k, f, _, _ in frames] == [(HEADERS, END_HEADERS | END_STREAM)]
    assert conn.open_streams() == 0
    conn.send_data(1, b"late")  # a forgotten stream takes nothing more
    conn.send_trailers(1, [(b"grpc-status", b"0")])
    assert conn.take() == b""


def test_a_response_over_the_default_window_waits_for_window_updates():
    conn, encoder = started(), hpack.Encoder()
    open_stream(conn, encoder, 1)
    conn.take()
    body = bytes(range(256)) * 400  # 102400 bytes, over 65535
    conn.send_block(1, h2.encode_headers([(b":status", b"200")]))
    conn.send_data(1, body)
    conn.send_trailers(1, [(b"grpc-status", b"0")])
    frames = parse(conn.take())
    sent = b"".join(data_frames(frames))
    assert len(sent) == h2.DEFAULT_WINDOW
    assert [k for k, *_ in frames].count(HEADERS) == 1  # no trailers yet
    assert conn.open_streams() == 1

    conn.receive(window_update(0, 100000))  # the connection may take more, the stream may not
    assert conn.take() == b""
    conn.receive(window_update(1, 10000))
    frames = parse(conn.take())
    assert [k for k, *_ in frames] == [DATA]
    sent += frames[0][3]
    assert len(frames[0][3]) == 10000

    conn.receive(window_update(1, 100000))
    frames = parse(conn.take())
    sent += b"".join(data_frames(frames))
    assert sent == body
    assert frames[-1][0] == HEADERS and frames[-1][1] & END_STREAM  # the trailers, after the last DATA
    assert all(k == DATA for k, *_ in frames[:-1])
    assert conn.open_streams() == 0


def test_the_connection_window_holds_back_too():
    conn, encoder = started(initial_window_size=1 << 20), hpack.Encoder()
    open_stream(conn, encoder, 1)
    conn.take()
    conn.send_data(1, b"x" * 70000)
    conn.send_trailers(1, [(b"grpc-status", b"0")])
    frames = parse(conn.take())
    assert sum(map(len, data_frames(frames))) == h2.DEFAULT_WINDOW
    assert HEADERS not in [k for k, *_ in frames]
    conn.receive(window_update(0, 70000 - h2.DEFAULT_WINDOW))
    frames = parse(conn.take())
    assert sum(map(len, data_frames(frames))) == 70000 - h2.DEFAULT_WINDOW
    assert frames[-1][0] == HEADERS and frames[-1][1] & END_STREAM


def test_a_small_initial_window_from_the_client():
    conn, encoder = started(initial_window_size=100), hpack.Encoder()
    open_stream(conn, encoder, 1)
    conn.take()
    conn.send_data(1, b"y" * 250)
    conn.send_trailers(1, [(b"grpc-status", b"0")])
    assert [len(p) for p in data_frames(parse(conn.take()))] == [100]
    conn.receive(window_update(1, 100))
    assert [len(p) for p in data_frames(parse(conn.take()))] == [100]
    conn.receive(window_update(1, 50))
    frames = parse(conn.take())
    assert [k for k, *_ in frames] == [DATA, HEADERS] and len(frames[0][3]) == 50


def test_data_frames_never_exceed_the_peer_frame_size():
    conn, encoder = started(initial_window_size=1 << 20), hpack.Encoder()
    conn.receive(window_update(0, 1 << 20))
    open_stream(conn, encoder, 1)
    conn.take()
    conn.send_data(1, b"z" * 50000)
    assert [len(p) for p in data_frames(parse(conn.take()))] == [16384, 16384, 16384, 848]

    conn = started(initial_window_size=1 << 20, max_frame_size=20000)
    conn.receive(window_update(0, 1 << 20))
    open_stream(conn, hpack.Encoder(), 1)
    conn.take()
    conn.send_data(1, b"z" * 50000)
    assert [len(p) for p in data_frames(parse(conn.take()))] == [20000, 20000, 10000]


def test_an_initial_window_change_adjusts_open_streams():
    conn, encoder = started(), hpack.Encoder()
    open_stream(conn, encoder, 1)
    open_stream(conn, encoder, 3)
    conn.receive(window_update(0, 1 << 20))
    conn.take()
    conn.send_data(1, b"a" * 70000)
    assert sum(map(len, data_frames(parse(conn.take()), 1))) == 65535
    # a larger initial window lets the blocked stream continue at once
    conn.receive(settings_frame(initial_window_size=65535 + 1000))
    frames = parse(conn.take())
    assert frames[0] == (SETTINGS, ACK, 0, b"")
    assert sum(map(len, data_frames(frames, 1))) == 1000
    # a smaller one can leave a window negative: nothing is sent until updates bring it above zero
    conn.receive(settings_frame(initial_window_size=1000))
    conn.take()
    conn.send_data(3, b"b" * 500)
    assert sum(map(len, data_frames(parse(conn.take()), 3))) == 500  # stream 3: 65535 - 65535 + 1000 left
    # stream 1's window went from 0 to -65535: an update of 65535 only brings it back to 0
    conn.receive(window_update(1, 65535))
    assert conn.take() == b""
    conn.receive(window_update(1, 10000))
    assert sum(map(len, data_frames(parse(conn.take()), 1))) == 70000 - 65535 - 1000


def test_initial_window_over_the_maximum_is_a_flow_control_error():
    conn = started()
    with pytest.raises(H2Error) as info:
        conn.receive(settings_frame(initial_window_size=2**31))
    assert info.value.code == h2.FLOW_CONTROL_ERROR
    assert goaway_code(conn.take()) == h2.FLOW_CONTROL_ERROR


def test_connection_window_overflow_is_a_flow_control_error():
    conn = started()
    with pytest.raises(H2Error) as info:
        conn.receive(window_update(0, 2**31 - 1))
    assert info.value.code == h2.FLOW_CONTROL_ERROR


# -- 4. stream lifecycle -----------------------------------------------------------------------------

def test_a_stream_is_forgotten_once_both_sides_ended_it():
    conn, encoder = started(), hpack.Encoder()
    open_stream(conn, encoder, 1, end_stream=False)
    conn.send_block(1, h2.encode_headers([(b":status", b"200")]))
    conn.send_trailers(1, [(b"grpc-status", b"0")])
    assert conn.open_streams() == 1  # the client has not ended it yet
    conn.receive(frame(DATA, END_STREAM, 1, b"x"))
    assert conn.open_streams() == 0
    # late DATA on the forgotten stream only counts for the connection window
    conn.take()
    half = h2.RECEIVE_WINDOW // 2
    assert conn.receive(frame(DATA, 0, 1, b"x" * (h2.MAX_FRAME - 1)) * (half // h2.MAX_FRAME)) == []
    assert window_updates(parse(conn.take())) == []
    assert conn.receive(frame(DATA, 0, 1, b"late" * 8)) == []
    # every DATA byte since the start: the b"x" above, the frames just under half the window, these 32
    assert window_updates(parse(conn.take())) == [(0, 1 + (h2.MAX_FRAME - 1) * (half // h2.MAX_FRAME) + 32)]


def test_rst_stream_from_the_client_gives_a_reset_event():
    conn, encoder = started(), hpack.Encoder()
    open_stream(conn, encoder, 1, end_stream=False)
    assert conn.receive(frame(RST_STREAM, 0, 1, h2.CANCEL.to_bytes(4, "big"))) == [("reset", 1, h2.CANCEL)]
    assert conn.open_streams() == 0
    assert conn.receive(frame(RST_STREAM, 0, 1, h2.CANCEL.to_bytes(4, "big"))) == []  # once only
    conn.take()
    conn.send_data(1, b"after")
    assert conn.take() == b""


def test_server_reset_sends_rst_stream_once():
    conn, encoder = started(), hpack.Encoder()
    open_stream(conn, encoder, 1, end_stream=False)
    conn.take()
    conn.reset(1)
    conn.reset(1)
    assert parse(conn.take()) == [(RST_STREAM, 0, 1, h2.CANCEL.to_bytes(4, "big"))]
    assert conn.open_streams() == 0


def _reused(conn, enc):
    open_stream(conn, enc, 3)
    open_stream(conn, enc, 1)


def _interrupted(conn, enc):
    conn.receive(frame(HEADERS, END_STREAM, 1, enc.encode(REQUEST)) + frame(PING, 0, 0, b"12345678"))


def _continuation_wrong_stream(conn, enc):
    conn.receive(frame(HEADERS, END_STREAM, 1, enc.encode(REQUEST)) + frame(CONTINUATION, END_HEADERS, 3, b""))


PROTOCOL_ERRORS = {
    "reused stream id": (_reused, h2.PROTOCOL_ERROR),
    "even stream id": (lambda c, e: open_stream(c, e, 2), h2.PROTOCOL_ERROR),
    "headers on stream 0": (lambda c, e: open_stream(c, e, 0), h2.PROTOCOL_ERROR),
    "data on stream 0": (lambda c, e: c.receive(frame(DATA, 0, 0, b"x")), h2.PROTOCOL_ERROR),
    "data on an idle stream": (lambda c, e: c.receive(frame(DATA, 0, 5, b"x")), h2.PROTOCOL_ERROR),
    "frame over 16384": (lambda c, e: c.receive(frame(0xEE, 0, 0, b"\x00" * 16385)[:9]), h2.FRAME_SIZE_ERROR),
    "interrupted header block": (_interrupted, h2.PROTOCOL_ERROR),
    "continuation on another stream": (_continuation_wrong_stream, h2.PROTOCOL_ERROR),
    "continuation alone": (lambda c, e: c.receive(frame(CONTINUATION, END_HEADERS, 1, b"")), h2.PROTOCOL_ERROR),
    "push promise": (lambda c, e: c.receive(frame(PUSH_PROMISE, END_HEADERS, 1, b"\x00\x00\x00\x02")),
                     h2.PROTOCOL_ERROR),
    "window update of 0": (lambda c, e: c.receive(window_update(0, 0)), h2.PROTOCOL_ERROR),
    "stream window update of 0": (lambda c, e: c.receive(window_update(1, 0)), h2.PROTOCOL_ERROR),
    "window update of 3 bytes": (lambda c, e: c.receive(frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01")),
                                 h2.FRAME_SIZE_ERROR),
    "settings length not a multiple of 6": (lambda c, e: c.receive(frame(SETTINGS, 0, 0, b"\x00\x04\x00\x00\x01")),
                                            h2.FRAME_SIZE_ERROR),
    "settings ack with payload": (lambda c, e: c.receive(frame(SETTINGS, ACK, 0, b"\x00" * 6)), h2.FRAME_SIZE_ERROR),
    "settings on a stream": (lambda c, e: c.receive(frame(SETTINGS, 0, 1)), h2.PROTOCOL_ERROR),
    "max frame size too small": (lambda c, e: c.receive(settings_frame(max_frame_size=16383)), h2.PROTOCOL_ERROR),
    "ping of 7 bytes": (lambda c, e: c.receive(frame(PING, 0, 0, b"1234567")), h2.FRAME_SIZE_ERROR),
    "ping on a stream": (lambda c, e: c.receive(frame(PING, 0, 1, b"12345678")), h2.PROTOCOL_ERROR),
    "rst_stream on stream 0": (lambda c, e: c.receive(frame(RST_STREAM, 0, 0, b"\x00\x00\x00\x08")),
                               h2.PROTOCOL_ERROR),
    "padding longer than the frame": (lambda c, e: c.receive(frame(HEADERS, PADDED | END_HEADERS, 1, b"\x05abc")),
                                      h2.PROTOCOL_ERROR),
    "headers too short for priority": (lambda c, e: c.receive(frame(HEADERS, PRIORITY_FLAG | END_HEADERS, 1, b"\x00")),
                                       h2.FRAME_SIZE_ERROR),
    "undecodable header block": (lambda c, e: c.receive(frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff")),
                                 h2.COMPRESSION_ERROR),
    "header block over 64 KiB": (lambda c, e: c.receive(frame(HEADERS, 0, 1, b"\x00" * 16384)
                                                        + frame(CONTINUATION, 0, 1, b"\x00" * 16384) * 4),
                                 h2.PROTOCOL_ERROR),
}


@pytest.mark.parametrize("name", list(PROTOCOL_ERRORS))
def test_protocol_errors_raise_with_the_right_goaway(name):
    action, code = PROTOCOL_ERRORS[name]
    conn, encoder = started(), hpack.Encoder()
    with pytest.raises(H2Error) as info:
        action(conn, encoder)
    assert info.value.code == code
    assert goaway_code(conn.take()) == code
    assert conn.closed


def test_goaway_carries_the_last_stream_and_new_streams_are_then_ignored():
    conn, encoder = started(), hpack.Encoder()
    open_stream(conn, encoder, 1, end_stream=False)
    conn.take()
    conn.goaway()
    conn.goaway()  # once only
    frames = parse(conn.take())
    assert frames == [(GOAWAY, 0, 0, (1).to_bytes(4, "big") + (0).to_bytes(4, "big"))]
    assert open_stream(conn, encoder, 3) == []
    assert conn.open_streams() == 1
    # the stream in flight still finishes
    assert conn.receive(frame(DATA, END_STREAM, 1, b"x")) == [("data", 1, b"x", True)]
    # the ignored stream's header block still went through the decoder: the table stays in step
    conn.receive(frame(HEADERS, END_HEADERS, 5, encoder.encode([(b"x-new", b"1")])))
    assert conn._decoder.header_table.dynamic_entries[0] == (b"x-new", b"1")


def test_a_goaway_from_the_client_stops_new_streams():
    conn, encoder = started(), hpack.Encoder()
    conn.receive(frame(GOAWAY, 0, 0, b"\x00" * 8))
    assert conn.closed
    assert open_stream(conn, encoder, 1) == []


def test_streams_over_the_limit_are_refused():
    conn, encoder = started(), hpack.Encoder()
    for stream in range(1, 2 * h2.MAX_STREAMS, 2):
        assert open_stream(conn, encoder, stream, end_stream=False)[0][:2] == ("headers", stream)
    conn.take()
    over = 2 * h2.MAX_STREAMS + 1
    assert open_stream(conn, encoder, over, end_stream=False) == []
    assert parse(conn.take()) == [(RST_STREAM, 0, over, h2.REFUSED_STREAM.to_bytes(4, "big"))]
    assert conn.open_streams() == h2.MAX_STREAMS
    # DATA the client had in flight for the refused stream is not an error
    assert conn.receive(frame(DATA, 0, over, b"x")) == []
    # once one stream is done, a new one is accepted again
    conn.receive(frame(RST_STREAM, 0, 1, b"\x00\x00\x00\x08"))
    assert open_stream(conn, encoder, over + 2)[0][:2] == ("headers", over + 2)


def test_headers_again_on_a_stream_the_client_ended_gives_no_second_end():
    """A client that already half-closed a stream may not end it again (RFC 9113 5.1: STREAM_CLOSED).
    A second ("data", stream, b"", True) makes the gRPC edge answer a unary call that is still
    running with INTERNAL."""
    conn, encoder = started(), hpack.Encoder()
    open_stream(conn, encoder, 1, end_stream=True)
    try:
        events = conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 1, encoder.encode([(b"x", b"1")])))
    except H2Error as exc:  # a connection error is allowed too
        assert exc.code in (h2.STREAM_CLOSED, h2.PROTOCOL_ERROR)
        return
    assert [e for e in events if e[0] == "data"] == []


# -- 5. the header-block cache ----------------------------------------------------------------------

def test_the_same_block_twice_decodes_to_the_same_list():
    conn, encoder = started(), hpack.Encoder()
    first = open_stream(conn, encoder, 1)  # adds to the dynamic table
    block = encoder.encode(REQUEST)  # now fully indexed
    second = conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 3, block))
    third = conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 5, block))
    assert first[0][2] == second[0][2] == third[0][2] == REQUEST
    assert third[0][2] is second[0][2]
    assert third[0][4] == block


def test_a_block_that_adds_to_the_table_is_not_cached():
    conn = started()
    # a literal with incremental indexing: decoding it again adds the entry again
    block = b"\x40\x05x-one\x01a"
    assert conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))[0][2] == [(b"x-one", b"a")]
    assert block not in conn._decoded
    again = conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 3, block))[0][2]
    assert again == [(b"x-one", b"a")]
    # the table holds the entry twice: index 62 and 63 both decode to it
    assert conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 5, b"\xbe\xbf"))[0][2] == [(b"x-one", b"a")] * 2


def test_an_indexed_block_decodes_anew_once_the_table_moved():
    conn = started()
    conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x40\x03x-a\x011"))
    indexed = b"\xbe"  # dynamic entry 62: the newest
    assert conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 3, indexed))[0][2] == [(b"x-a", b"1")]
    conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 5, b"\x40\x03x-b\x012"))
    assert conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 7, indexed))[0][2] == [(b"x-b", b"2")]


def test_the_cache_is_not_fooled_by_a_reused_entry_address():
    """The cache keys the table state on ``id()`` of its newest entry. Once that entry is evicted
    and freed, CPython hands its memory to a later entry, the state looks unchanged, and an
    indexed block decodes to the evicted field (a real client's table churns like this when
    some calls carry new metadata)."""
    conn = started()
    streams = iter(range(1, 10000, 2))

    def entry(name, value):  # a literal field with incremental indexing
        return bytes([0x40, len(name)]) + name + bytes([len(value)]) + value

    def send(block):
        return conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, next(streams), block))

    # a table that holds one entry (a size update to 60 octets; each entry here takes 36)
    send(bytes([0x3F, 29]) + entry(b"x-a", b"1"))
    indexed = b"\xbe"  # dynamic entry 62, the only one
    assert send(indexed)[0][2] == [(b"x-a", b"1")]  # decoded and cached
    wrong = 0
    for round_ in range(20):
        value = b"%d" % (round_ % 10)
        send(entry(b"x-b", value))  # evicts the cached state's entry, which is freed
        send(entry(b"x-c", value))  # may be allocated where that entry was
        wrong += send(indexed)[0][2] != [(b"x-c", value)]
    assert wrong == 0, f"{wrong} of 20 indexed blocks decoded to an evicted entry"


# -- 6. fuzzing -------------------------------------------------------------------------------------

def _feed(conn: H2Connection, wire: bytes, cuts: list[int]) -> None:
    """Give ``wire`` to ``conn`` in chunks at ``cuts``; only H2Error may come out, and it ends the feed."""
    position = 0
    for cut in sorted(cuts) + [len(wire)]:
        cut = min(cut, len(wire))
        if cut < position:
            continue
        try:
            events = conn.receive(wire[position:cut])
        except H2Error as exc:
            assert exc.code in (h2.PROTOCOL_ERROR, h2.FLOW_CONTROL_ERROR, h2.FRAME_SIZE_ERROR, h2.COMPRESSION_ERROR)
            assert conn.closed
            return
        assert isinstance(events, list)
        for event in events:
            assert event[0] in ("headers", "data", "reset")
        position = cut


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=8))
def test_fuzz_any_bytes_after_a_valid_start(wire, cuts):
    conn = started()
    _feed(conn, wire, cuts)
    conn.take()


_frames = st.builds(
    lambda *args: frame(*args),
    st.sampled_from(list(range(10)) + [0x10, 0xFF]),
    st.integers(0, 255),
    st.one_of(st.sampled_from([0, 1, 2, 3, 5, 7]), st.integers(0, 2**31 - 1)),
    st.one_of(st.binary(max_size=40), st.sampled_from([b"\x00" * 4, b"\x00\x00\x10\x00", b"12345678",
                                                       b"\x00\x04\x00\x00\x00\x10", b"\x82\x86\x84"])),
)


# Frames that tend to be valid, so the random ones land on live streams and half-built header blocks.
_likely_frames = st.builds(
    lambda *args: frame(*args),
    st.sampled_from([DATA, HEADERS, CONTINUATION, WINDOW_UPDATE, RST_STREAM, SETTINGS]),
    st.sampled_from([0, END_STREAM, END_HEADERS, END_HEADERS | END_STREAM, PADDED | END_HEADERS, ACK]),
    st.sampled_from([0, 1, 3, 5, 7]),
    st.sampled_from([b"", b"\x82\x86\x84", b"\x02\x82\x86\x84\x00\x00", b"\x00\x00\x10\x00", b"\x00\x00\x00\x08",
                     b"\x00\x04\x00\x00\x00\x10", b"\x00\x04\x00\x01\x00\x00", b"hello"]),
)


@FUZZ
@given(st.lists(st.one_of(_frames, _likely_frames, _likely_frames, _likely_frames), max_size=12), st.lists(st.integers(0, 600), max_size=6))
def test_fuzz_well_formed_frames_of_any_kind(frames, cuts):
    conn, encoder = started(), hpack.Encoder()
    # a stream open and one with a response waiting, so data, resets and window updates meet live state
    open_stream(conn, encoder, 1, end_stream=False)
    conn.send_block(1, h2.encode_headers([(b":status", b"200")]))
    conn.send_data(1, b"d" * 70000)
    _feed(conn, b"".join(frames), cuts)
    parse(conn.take())  # what is queued is whole frames


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=40).map(str.encode)
_values = st.one_of(st.binary(max_size=300),
                    st.integers(120, 135).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
                    st.sampled_from([b"200"]))


@FUZZ
@given(st.lists(st.tuples(st.one_of(_names, st.sampled_from([b":status"])), _values), max_size=30))
def test_fuzz_encode_headers_round_trips_through_hpack(fields):
    block = h2.encode_headers(fields)
    assert hpack.Decoder().decode(block, raw=True) == fields


@FUZZ
@given(st.lists(st.tuples(_names, _values), min_size=1, max_size=10), st.integers(16000, 40000),
       st.sampled_from([None, 16384, 20000]), st.booleans())
def test_fuzz_large_header_blocks_split_into_continuations(fields, filler, max_frame, end_stream):
    fields = fields + [(b"x-filler", b"f" * filler)]
    conn = started(**({"max_frame_size": max_frame} if max_frame else {}))
    open_stream(conn, hpack.Encoder(), 1, end_stream=False)
    conn.take()
    conn.send_headers(1, fields, end_stream=end_stream)
    frames = parse(conn.take())
    limit = max_frame or 16384
    assert frames[0][0] == HEADERS and frames[0][2] == 1
    assert bool(frames[0][1] & END_STREAM) == end_stream
    assert all(k == CONTINUATION and s == 1 for k, _, s, _ in frames[1:])
    assert all(len(p) <= limit for *_, p in frames)
    assert [bool(f & END_HEADERS) for _, f, _, _ in frames] == [False] * (len(frames) - 1) + [True]
    block = b"".join(p for *_, p in frames)
    assert len(frames) == -(-len(block) // limit)  # as few frames as the limit allows
    assert hpack.Decoder(max_header_list_size=1 << 20).decode(block, raw=True) == fields


# -- the whole-answer fast path (send_unary) -------------------------------------------------------

def test_send_unary_writes_a_whole_answer_when_it_fits_and_falls_back_when_not():
    conn = started(initial_window_size=100)
    encoder = hpack.Encoder()
    open_stream(conn, encoder, 1)
    open_stream(conn, encoder, 3)
    head, trailers = h2.encode_headers([(b":status", b"200")]), h2.encode_headers([(b"grpc-status", b"0")])
    assert conn.send_unary(1, head, b"x" * 100, trailers)
    frames = parse(conn.take())
    assert [(kind, flags, stream) for kind, flags, stream, _ in frames] == [
        (HEADERS, END_HEADERS, 1), (DATA, 0, 1), (HEADERS, END_HEADERS | END_STREAM, 1)]
    assert conn.open_streams() == 1  # stream 1 ended on both sides and is forgotten
    # Stream 3's window is 100, but the connection's is 65535 - 100 and the data does not fit
    # the stream: nothing is sent and the caller takes the general path.
    assert not conn.send_unary(3, head, b"y" * 101, trailers)
    assert conn.take() == b""
    # The connection window is shared: what stream 1 used is gone from it.
    assert conn._send_window == 65535 - 100


def test_frames_in_flight_on_a_refused_or_ignored_stream_are_ignored():
    """RFC 9113 5.1/6.8: after RST_STREAM (here REFUSED_STREAM) or GOAWAY, frames the client already
    sent on that stream are ignored. Request trailers on a refused stream used to be a connection
    error ("stream N is not new"), which failed every other call on the connection."""
    conn, encoder = started(), hpack.Encoder()
    for stream in range(1, 2 * h2.MAX_STREAMS, 2):
        open_stream(conn, encoder, stream, end_stream=False)
    over = 2 * h2.MAX_STREAMS + 1
    assert open_stream(conn, encoder, over, end_stream=False) == []
    trailers = [(b"x-trailer", b"1")]
    assert conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, over, encoder.encode(trailers))) == []
    assert conn.open_streams() == h2.MAX_STREAMS and not conn.closed

    conn, encoder = started(), hpack.Encoder()
    conn.goaway()
    assert open_stream(conn, encoder, 1, end_stream=False) == []
    assert conn.receive(frame(HEADERS, END_HEADERS | END_STREAM, 1, encoder.encode(trailers))) == []
    # the ignored blocks still went through the decoder: the table stays in step
    assert conn._decoder.header_table.dynamic_entries[0] == (b"x-trailer", b"1")
