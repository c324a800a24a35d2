"""HTTP/2 for the gRPC front, server side and sans-IO: bytes in, events out, bytes to send.

The pure twin of ``pillion._ext.h2``, and its specification.

Only what gRPC over cleartext HTTP/2 ("h2c" with prior knowledge) uses: the preface,
SETTINGS, HEADERS with CONTINUATION, DATA, WINDOW_UPDATE flow control both ways, PING,
RST_STREAM and GOAWAY. PRIORITY is read and ignored; a client never pushes. Header blocks
are decoded by the ``hpack`` package; the ones sent here are literal fields without
indexing, so the client's decoding table never depends on this side.

A protocol error ends the connection: ``receive`` raises :class:`H2Error` after
queueing the GOAWAY, and the caller sends what is queued and closes.
"""

from __future__ import annotations

import struct

import hpack

from pillion.grpcapi.h2_errors import H2Error

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 5, 6, 7, 8, 9

_HEADER_TABLE_SIZE, _ENABLE_PUSH, _MAX_CONCURRENT_STREAMS, _INITIAL_WINDOW_SIZE, _MAX_FRAME_SIZE = 1, 2, 3, 4, 5
_MAX_HEADER_LIST_SIZE = 6

DEFAULT_WINDOW = 65535
MAX_WINDOW = 2**31 - 1
MAX_FRAME = 16384  # what this side accepts (the protocol's default; never raised)
MAX_HEADER_BLOCK = 64 * 1024
RECEIVE_WINDOW = 1 << 20  # what each stream, and the connection, may have in flight towards this side
MAX_STREAMS = 256

# Request events: ("headers", stream, [(name, value), ...], end_stream, block), ("data", stream, bytes,
# end_stream), ("reset", stream, error code). ``block`` is the encoded header block: equal blocks decoded
# against an unchanged table carry the very same list, so a caller may cache what it derives by block.
HEADERS_EVENT, DATA_EVENT, RESET_EVENT = "headers", "data", "reset"

__all__ = [
    "PREFACE", "DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY",
    "WINDOW_UPDATE", "CONTINUATION", "END_STREAM", "ACK", "END_HEADERS", "PADDED", "PRIORITY_FLAG",
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "STREAM_CLOSED", "FRAME_SIZE_ERROR",
    "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "DEFAULT_WINDOW", "MAX_WINDOW", "MAX_FRAME",
    "MAX_HEADER_BLOCK", "RECEIVE_WINDOW", "MAX_STREAMS", "HEADERS_EVENT", "DATA_EVENT", "RESET_EVENT",
    "H2Connection", "H2Error", "frame", "encode_headers",
]


class _Stream:
    __slots__ = ("send_window", "pending", "trailers", "remote_closed", "local_closed")

    def __init__(self, window: int):
        self.send_window = window
        self.pending = bytearray()  # DATA waiting for a window
        self.trailers: bytes | None = None  # the closing HEADERS block, sent once ``pending`` is out
        self.remote_closed = False
        self.local_closed = False


_HEAD = struct.Struct(">IBI")  # the 24-bit length and the type in one 32-bit word, then flags and stream


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return _HEAD.pack((len(payload) << 8) | kind, flags, stream) + payload


def encode_headers(headers) -> bytes:
    """A header block of literal fields without indexing, not Huffman-coded (``:status: 200`` indexed)."""
    out = bytearray()
    for name, value in headers:
        if name == b":status" and value == b"200":
            out.append(0x88)
            continue
        out.append(0x00)
        _string(out, name)
        _string(out, value)
    return bytes(out)


def _string(out: bytearray, data: bytes) -> None:
    length = len(data)
    if length < 127:
        out.append(length)
    else:
        out.append(127)
        length -= 127
        while length >= 128:
            out.append((length & 0x7F) | 0x80)
            length >>= 7
        out.append(length)
    out += data


class H2Connection:
    """One client connection. ``receive`` returns request events; ``send_*`` queue frames; ``take`` empties the queue."""

    def __init__(self):
        self._out = bytearray()
        self._buffer = b""
        self._preface = False
        self._decoder = hpack.Decoder()
        self._decoder.max_header_list_size = MAX_HEADER_BLOCK
        self._decoded: dict[bytes, tuple] = {}  # header block -> (decoding table state, fields)
        self._block = bytearray()  # a header block continued by CONTINUATION frames
        self._block_stream = 0
        self._block_end_stream = False
        self._streams: dict[int, _Stream] = {}
        self._reset_here: set[int] = set()
        self._last_stream = 0
        self._peer_window = DEFAULT_WINDOW  # the peer's initial stream window (its SETTINGS)
        self._peer_frame = MAX_FRAME
        self._send_window = DEFAULT_WINDOW  # the connection's, towards the peer
        self._consumed = 0  # DATA bytes received and not yet given back to the connection window
        self.closed = False
        settings = struct.pack(">HIHIHI", _MAX_CONCURRENT_STREAMS, MAX_STREAMS, _INITIAL_WINDOW_SIZE, RECEIVE_WINDOW,
                               _MAX_HEADER_LIST_SIZE, MAX_HEADER_BLOCK)
        self._out += frame(SETTINGS, 0, 0, settings)
        self._out += frame(WINDOW_UPDATE, 0, 0, (RECEIVE_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big"))

    # -- output ------------------------------------------------------------------------

    def take(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def send_headers(self, stream: int, headers, end_stream: bool = False) -> None:
        self.send_block(stream, encode_headers(headers), end_stream)

    def send_block(self, stream: int, block: bytes, end_stream: bool = False) -> None:
        """``send_headers`` with the block already encoded (``encode_headers``)."""
        self._header_frames(stream, block, end_stream)
        if end_stream:
            self._local_close(stream)

    def send_data(self, stream: int, data: bytes) -> None:
        state = self._streams.get(stream)
        if state is None or state.local_closed:
            return
        state.pending += data
        self._pump(stream, state)

    def send_unary(self, stream: int, head: bytes, data: bytes, trailers: bytes) -> bool:
        """A whole answer (HEADERS, one DATA, closing HEADERS) at once, when the windows and frame
        size let it go out now; False, with nothing sent, when it has to take the general path."""
        state = self._streams.get(stream)
        size = len(data)
        if (state is None or state.local_closed or state.pending or size > self._send_window
                or size > state.send_window or size > self._peer_frame
                or len(head) > self._peer_frame or len(trailers) > self._peer_frame):
            return False
        self._send_window -= size
        state.send_window -= size
        self._out += (_HEAD.pack((len(head) << 8) | HEADERS, END_HEADERS, stream) + head
                      + _HEAD.pack((size << 8) | DATA, 0, stream) + data
                      + _HEAD.pack((len(trailers) << 8) | HEADERS, END_HEADERS | END_STREAM, stream) + trailers)
        state.local_closed = True
        if state.remote_closed:
            del self._streams[stream]
        else:
            self.abandon(stream)
        return True

    def send_trailers(self, stream: int, headers) -> None:
        """The closing HEADERS, after every DATA queued so far has been sent."""
        self.send_trailers_block(stream, encode_headers(headers))

    def send_trailers_block(self, stream: int, block: bytes) -> None:
        state = self._streams.get(stream)
        if state is None or state.local_closed:
            return
        state.trailers = block
        self._pump(stream, state)

    def abandon(self, stream: int) -> None:
        """The answer is complete: if the client is still sending, tell it to stop (RST_STREAM NO_ERROR)."""
        state = self._streams.get(stream)
        if state is not None and state.local_closed and not state.remote_closed:
            del self._streams[stream]
            self._forget(stream)
            self._out += frame(RST_STREAM, 0, stream, NO_ERROR.to_bytes(4, "big"))

    def reset(self, stream: int, code: int = CANCEL) -> None:
        if self._streams.pop(stream, None) is not None:
            self._forget(stream)
            self._out += frame(RST_STREAM, 0, stream, code.to_bytes(4, "big"))

    def _forget(self, stream: int) -> None:
        """Remember a stream reset here for a while: the client may have frames for it in flight."""
        if len(self._reset_here) >= 1024:
            self._reset_here.clear()
        self._reset_here.add(stream)

    def goaway(self, code: int = NO_ERROR, reason: bytes = b"") -> None:
        if not self.closed:
            self.closed = True
            self._out += frame(GOAWAY, 0, 0, self._last_stream.to_bytes(4, "big") + code.to_bytes(4, "big") + reason)

    def open_streams(self) -> int:
        return len(self._streams)

    def _header_frames(self, stream: int, block: bytes, end_stream: bool) -> None:
        size = self._peer_frame
        first, rest = block[:size], block[size:]
        flags = (END_STREAM if end_stream else 0) | (0 if rest else END_HEADERS)
        self._out += frame(HEADERS, flags, stream, first)
        while rest:
            chunk, rest = rest[:size], rest[size:]
            self._out += frame(CONTINUATION, 0 if rest else END_HEADERS, stream, chunk)

    def _pump(self, stream: int, state: _Stream) -> None:
        pending = state.pending
        while pending:
            size = min(len(pending), self._send_window, state.send_window, self._peer_frame)
            if size <= 0:
                return
            self._out += frame(DATA, 0, stream, bytes(pending[:size]))
            del pending[:size]
            self._send_window -= size
            state.send_window -= size
        if state.trailers is not None:
            self._header_frames(stream, state.trailers, True)
            state.trailers = None
            self._local_close(stream)

    def _local_close(self, stream: int) -> None:
        state = self._streams.get(stream)
        if state is None:
            return
        state.local_closed = True
        if state.remote_closed:
            del self._streams[stream]

    # -- input -------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[tuple]:
        """Events for ``data``; raises H2Error (GOAWAY queued) when the peer broke the protocol."""
        buffer = self._buffer + data if self._buffer else data
        if not self._preface:
            if len(buffer) < len(PREFACE):
                if not PREFACE.startswith(buffer):
                    self._fail(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._buffer = buffer
                return []
            if not buffer.startswith(PREFACE):
                self._fail(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            buffer = buffer[len(PREFACE):]
            self._preface = True
        events: list[tuple] = []
        received = 0  # DATA bytes to give back to the connection window
        position, end = 0, len(buffer)
        while end - position >= 9:
            length = int.from_bytes(buffer[position:position + 3], "big")
            if length > MAX_FRAME:
                self._fail(FRAME_SIZE_ERROR, f"a frame of {length} bytes (at most {MAX_FRAME})")
            if end - position - 9 < length:
                break
            kind, flags = buffer[position + 3], buffer[position + 4]
            stream = int.from_bytes(buffer[position + 5:position + 9], "big") & 0x7FFFFFFF
            payload = buffer[position + 9:position + 9 + length]
            position += 9 + length
            if self._block_stream and kind != CONTINUATION:
                self._fail(PROTOCOL_ERROR, "a header block was interrupted")
            if kind == DATA:
                received += self._data(stream, flags, payload, events)
            elif kind == HEADERS:
                self._headers(stream, flags, payload, events)
            elif kind == CONTINUATION:
                self._continuation(stream, flags, payload, events)
            elif kind == SETTINGS:
                self._settings(stream, flags, payload)
            elif kind == WINDOW_UPDATE:
                self._window_update(stream, payload)
            elif kind == PING:
                if len(payload) != 8 or stream:
                    self._fail(FRAME_SIZE_ERROR if len(payload) != 8 else PROTOCOL_ERROR, "a malformed PING")
                if not flags & ACK:
                    self._out += frame(PING, ACK, 0, payload)
            elif kind == RST_STREAM:
                if len(payload) != 4 or not stream:
                    self._fail(PROTOCOL_ERROR, "a malformed RST_STREAM")
                if self._streams.pop(stream, None) is not None:
                    events.append((RESET_EVENT, stream, int.from_bytes(payload, "big")))
            elif kind == GOAWAY:
                self.closed = True
            elif kind == PUSH_PROMISE:
                self._fail(PROTOCOL_ERROR, "a client cannot push")
            # PRIORITY and unknown frame types are ignored, as the protocol asks.
        self._buffer = buffer[position:]
        self._consumed += received
        if self._consumed >= RECEIVE_WINDOW // 2:  # given back in halves: no WINDOW_UPDATE per request
            self._out += frame(WINDOW_UPDATE, 0, 0, self._consumed.to_bytes(4, "big"))
            self._consumed = 0
        return events

    def _fail(self, code: int, reason: str):
        self.closed = True  # a GOAWAY even after a graceful one: this one carries the error
        self._out += frame(GOAWAY, 0, 0, self._last_stream.to_bytes(4, "big") + code.to_bytes(4, "big")
                           + reason.encode()[:200])
        raise H2Error(code, reason)

    def _strip(self, flags: int, payload: bytes, priority: bool) -> bytes:
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                self._fail(PROTOCOL_ERROR, "padding longer than the frame")
            payload = payload[1:len(payload) - payload[0]]
        if priority and flags & PRIORITY_FLAG:
            if len(payload) < 5:
                self._fail(FRAME_SIZE_ERROR, "a HEADERS frame too short for its priority")
            payload = payload[5:]
        return payload

    def _data(self, stream: int, flags: int, payload: bytes, events: list) -> int:
        if not stream:
            self._fail(PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
        state = self._streams.get(stream)
        data = self._strip(flags, payload, False)
        if state is None or state.remote_closed:
            if stream > self._last_stream:
                self._fail(PROTOCOL_ERROR, "DATA on a stream that was never opened")
            return flow  # a stream reset or finished here: count it for the connection only
        end_stream = bool(flags & END_STREAM)
        if end_stream:
            self._remote_close(stream, state)
        elif flow:
            self._out += frame(WINDOW_UPDATE, 0, stream, flow.to_bytes(4, "big"))
        events.append((DATA_EVENT, stream, data, end_stream))
        return flow

    def _headers(self, stream: int, flags: int, payload: bytes, events: list) -> None:
        if not stream or not stream & 1:
            self._fail(PROTOCOL_ERROR, f"HEADERS on stream {stream}")
        block = self._strip(flags, payload, True)
        self._block_end_stream = bool(flags & END_STREAM)
        if flags & END_HEADERS:
            self._header_block(stream, block, events)
        else:
            self._block_stream = stream
            self._block[:] = block

    def _continuation(self, stream: int, flags: int, payload: bytes, events: list) -> None:
        if stream != self._block_stream or not stream:
            self._fail(PROTOCOL_ERROR, "CONTINUATION without a header block")
        self._block += payload
        if len(self._block) > MAX_HEADER_BLOCK:
            self._fail(PROTOCOL_ERROR, "a header block over 64 KiB")
        if flags & END_HEADERS:
            self._block_stream = 0
            self._header_block(stream, bytes(self._block), events)
            self._block.clear()

    def _decode(self, block: bytes) -> list:
        """The block's fields. Clients send the same block again and again (every call of a method
        with the same metadata); one that left the decoding table as it was is kept, and reused
        for as long as the table does not change."""
        table = self._decoder.header_table
        entries = table.dynamic_entries
        # The newest entry itself, not its id(): the cache keeps it alive, so no later entry can
        # take its address and make a changed table look unchanged.
        newest = entries[0] if entries else None
        state = (len(entries), table.maxsize)
        cached = self._decoded.get(block)
        if cached is not None and cached[0] == state and cached[1] is newest:
            return cached[2]
        try:
            headers = self._decoder.decode(block, raw=True)
        except hpack.HPACKError as exc:
            # hpack's message can hold a memory address: only its kind goes into the GOAWAY
            self._fail(COMPRESSION_ERROR, f"a header block that does not decode ({type(exc).__name__})")
        if state == (len(entries), table.maxsize) and (entries[0] if entries else None) is newest:
            if len(self._decoded) >= 64:
                self._decoded.clear()
            self._decoded[block] = (state, newest, headers)
        return headers

    def _header_block(self, stream: int, block: bytes, events: list) -> None:
        headers = self._decode(block)
        end_stream = self._block_end_stream
        state = self._streams.get(stream)
        if state is not None:  # trailers of a request
            if state.remote_closed:  # the client ended this stream already (RFC 9113 5.1: STREAM_CLOSED)
                del self._streams[stream]
                self._out += frame(RST_STREAM, 0, stream, STREAM_CLOSED.to_bytes(4, "big"))
                events.append((RESET_EVENT, stream, STREAM_CLOSED))
                return
            if not end_stream:
                self._fail(PROTOCOL_ERROR, "a second HEADERS without END_STREAM")
            self._remote_close(stream, state)
            events.append((DATA_EVENT, stream, b"", True))
            return
        if stream <= self._last_stream:
            if stream in self._reset_here:  # frames already in flight on a stream this side reset: ignored
                return
            self._fail(PROTOCOL_ERROR, f"stream {stream} is not new")
        self._last_stream = stream
        if self.closed:  # after GOAWAY: new streams are ignored, and so are their frames in flight
            self._forget(stream)
            return
        if len(self._streams) >= MAX_STREAMS:
            self._forget(stream)  # its frames in flight are ignored, as a reset stream's are
            self._out += frame(RST_STREAM, 0, stream, REFUSED_STREAM.to_bytes(4, "big"))
            return
        state = self._streams[stream] = _Stream(self._peer_window)
        if end_stream:
            state.remote_closed = True
        events.append((HEADERS_EVENT, stream, headers, end_stream, block))

    def _remote_close(self, stream: int, state: _Stream) -> None:
        state.remote_closed = True
        if state.local_closed:
            del self._streams[stream]

    def _settings(self, stream: int, flags: int, payload: bytes) -> None:
        if stream:
            self._fail(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                self._fail(FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload")
            return
        if len(payload) % 6:
            self._fail(FRAME_SIZE_ERROR, "a SETTINGS frame of a length not a multiple of 6")
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == _INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    self._fail(FLOW_CONTROL_ERROR, "an initial window over 2^31-1")
                delta, self._peer_window = value - self._peer_window, value
                for state in self._streams.values():
                    state.send_window += delta
            elif key == _MAX_FRAME_SIZE:
                if not MAX_FRAME <= value <= 16777215:
                    self._fail(PROTOCOL_ERROR, f"a maximum frame size of {value}")
                self._peer_frame = value
        self._out += frame(SETTINGS, ACK, 0)
        for stream_id, state in list(self._streams.items()):
            self._pump(stream_id, state)

    def _window_update(self, stream: int, payload: bytes) -> None:
        if len(payload) != 4:
            self._fail(FRAME_SIZE_ERROR, "a WINDOW_UPDATE not of 4 bytes")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if not increment:
            self._fail(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
        if not stream:
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                self._fail(FLOW_CONTROL_ERROR, "the connection window over 2^31-1")
            for stream_id, state in list(self._streams.items()):
                if state.pending or state.trailers is not None:
                    self._pump(stream_id, state)
            return
        state = self._streams.get(stream)
        if state is not None:
            state.send_window += increment
            self._pump(stream, state)
