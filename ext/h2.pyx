# cython: embedsignature=True, embedsignature.format=clinic
"""HTTP/2 for the gRPC front, server side and sans-IO; compiled twin of ``pillion._pure.h2``.

The pure module is the specification (protocol subset, event shapes, errors): same names,
same events, byte-identical output, the same ``H2Error`` codes at the same moments
(tests/parity/test_h2_parity.py). Frame headers are read in C straight from the received
``bytes``; output frames are written into one C buffer that ``take()`` copies out once.
Declarations stay in this file (ext/README.md, "Sharing declarations").

Where it differs on purpose: ``receive`` takes ``bytes`` only (what asyncio hands over), the
classes are final and have no ``__dict__``, and the decoding table's state is read after each
decode rather than before each cache lookup (only decoding changes it, so the answer is the same).
"""

cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport uint32_t
from libc.string cimport memcmp, memcpy

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

DEFAULT_WINDOW = 65535
MAX_WINDOW = 2**31 - 1
MAX_FRAME = 16384
MAX_HEADER_BLOCK = 64 * 1024
RECEIVE_WINDOW = 1 << 20
MAX_STREAMS = 256

HEADERS_EVENT, DATA_EVENT, RESET_EVENT = "headers", "data", "reset"

__all__ = [
    "PREFACE", "DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY",
    "WINDOW_UPDATE", "CONTINUATION", "END_STREAM", "ACK", "END_HEADERS", "PADDED", "PRIORITY_FLAG",
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "STREAM_CLOSED", "FRAME_SIZE_ERROR",
    "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "DEFAULT_WINDOW", "MAX_WINDOW", "MAX_FRAME",
    "MAX_HEADER_BLOCK", "RECEIVE_WINDOW", "MAX_STREAMS", "HEADERS_EVENT", "DATA_EVENT", "RESET_EVENT",
    "H2Connection", "H2Error", "frame", "encode_headers",
]

# The same values for C code (the Python names above are module globals, looked up at run time).
cdef enum:
    F_DATA = 0
    F_HEADERS = 1
    F_RST_STREAM = 3
    F_SETTINGS = 4
    F_PUSH_PROMISE = 5
    F_PING = 6
    F_GOAWAY = 7
    F_WINDOW_UPDATE = 8
    F_CONTINUATION = 9
    F_END_STREAM = 0x1
    F_ACK = 0x1
    F_END_HEADERS = 0x4
    F_PADDED = 0x8
    F_PRIORITY_FLAG = 0x20
    E_NO_ERROR = 0
    E_PROTOCOL_ERROR = 1
    E_FLOW_CONTROL_ERROR = 3
    E_STREAM_CLOSED = 5
    E_FRAME_SIZE_ERROR = 6
    E_REFUSED_STREAM = 7
    E_COMPRESSION_ERROR = 9
    S_MAX_CONCURRENT_STREAMS = 3
    S_INITIAL_WINDOW_SIZE = 4
    S_MAX_FRAME_SIZE = 5
    S_MAX_HEADER_LIST_SIZE = 6
    C_DEFAULT_WINDOW = 65535
    C_MAX_WINDOW = 2147483647
    C_MAX_FRAME = 16384
    C_MAX_HEADER_BLOCK = 65536
    C_RECEIVE_WINDOW = 1 << 20
    C_MAX_STREAMS = 256

cdef bytes _PREFACE = PREFACE
cdef Py_ssize_t _PREFACE_LEN = len(PREFACE)
cdef object _H2Error = H2Error
cdef object _HPACKError = hpack.HPACKError
cdef object _Decoder = hpack.Decoder
cdef object _struct_error = struct.error


@cython.final
@cython.freelist(64)
cdef class _Stream:
    """One open stream: its window towards the peer, what waits for it, which sides ended it."""
    cdef long long send_window
    cdef bytearray pending  # DATA waiting for a window; None until the first send_data (most calls never need it)
    cdef bytes trailers  # the closing HEADERS block, sent once ``pending`` is out
    cdef bint remote_closed
    cdef bint local_closed


cdef inline _Stream _new_stream(long long window):
    cdef _Stream state = _Stream.__new__(_Stream)
    state.send_window = window
    return state


cdef inline bint _has_pending(_Stream state) noexcept:
    return state.pending is not None and PyByteArray_GET_SIZE(state.pending) > 0


_HEAD = struct.Struct(">IBI")


def frame(kind, flags, stream, payload=b""):
    """Kept on ``struct`` so out-of-range arguments fail as in the pure twin; the connection writes its own frames in C."""
    return _HEAD.pack((len(payload) << 8) | kind, flags, stream) + payload


def encode_headers(headers):
    """A header block of literal fields without indexing, not Huffman-coded (``:status: 200`` indexed)."""
    cdef bytearray out = bytearray()
    for name, value in headers:
        if name == b":status" and value == b"200":
            out.append(0x88)
            continue
        out.append(0x00)
        _string(out, name)
        _string(out, value)
    return bytes(out)


cdef int _string(bytearray out, object data) except -1:
    cdef Py_ssize_t length = len(data)
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
    return 0


cdef inline bytes _as_bytes(object data):
    """``bytes`` as is; any other bytes-like object copied (a ``str`` or an ``int`` is a TypeError)."""
    if type(data) is bytes:
        return <bytes>data
    return bytes(memoryview(data))


cdef inline uint32_t _stream_id(object stream) except? 0xFFFFFFFF:
    """A caller's stream id for a frame header: out of range fails as ``struct.pack('>I')`` does."""
    if not 0 <= stream <= 0xFFFFFFFF:
        raise _struct_error("'I' format requires 0 <= number <= 4294967295")
    return stream


cdef inline long long _u32(const unsigned char* p) noexcept:
    return (<long long>p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]


cdef inline void _put_u32(unsigned char* at, uint32_t value) noexcept:
    at[0] = <unsigned char>(value >> 24)
    at[1] = <unsigned char>(value >> 16)
    at[2] = <unsigned char>(value >> 8)
    at[3] = <unsigned char>value


cdef inline unsigned char* _put_head(unsigned char* at, Py_ssize_t length, int kind, int flags,
                                     uint32_t stream) noexcept:
    at[0] = <unsigned char>(length >> 16)
    at[1] = <unsigned char>(length >> 8)
    at[2] = <unsigned char>length
    at[3] = <unsigned char>kind
    at[4] = <unsigned char>flags
    _put_u32(at + 5, stream)
    return at + 9


@cython.final
cdef class H2Connection:
    """One client connection. ``receive`` returns request events; ``send_*`` queue frames; ``take`` empties the queue."""

    cdef unsigned char* _out  # frames queued for ``take``: _len bytes used of _cap
    cdef Py_ssize_t _len, _cap
    cdef bytes _buffer
    cdef bint _preface
    cdef readonly object _decoder
    cdef readonly dict _decoded  # header block -> ((table length, table maxsize), newest entry, fields)
    cdef Py_ssize_t _table_len  # the decoding table's state after the last decode (see _decode)
    cdef object _table_max, _table_newest
    cdef bytearray _block  # a header block continued by CONTINUATION frames
    cdef long long _block_stream
    cdef bint _block_end_stream
    cdef dict _streams  # stream id (int) -> _Stream
    cdef set _reset_here
    cdef long long _last_stream
    cdef long long _peer_window  # the peer's initial stream window (its SETTINGS)
    cdef long long _peer_frame
    cdef readonly long long _send_window  # the connection's, towards the peer
    cdef long long _consumed  # DATA bytes received and not yet given back to the connection window
    cdef public bint closed

    def __cinit__(self):
        self._cap = 4096
        self._out = <unsigned char*>PyMem_Malloc(self._cap)
        if self._out is NULL:
            raise MemoryError()
        self._buffer = b""
        self._decoder = _Decoder()
        self._decoder.max_header_list_size = MAX_HEADER_BLOCK
        self._decoded = {}
        self._read_table()
        self._block = bytearray()
        self._streams = {}
        self._reset_here = set()
        self._peer_window = C_DEFAULT_WINDOW
        self._peer_frame = C_MAX_FRAME
        self._send_window = C_DEFAULT_WINDOW
        cdef unsigned char* at = _put_head(self._room(9 + 18), 18, F_SETTINGS, 0, 0)
        for key, value in ((S_MAX_CONCURRENT_STREAMS, C_MAX_STREAMS), (S_INITIAL_WINDOW_SIZE, C_RECEIVE_WINDOW),
                           (S_MAX_HEADER_LIST_SIZE, C_MAX_HEADER_BLOCK)):
            at[0], at[1] = 0, key
            _put_u32(at + 2, value)
            at += 6
        self._frame_u32(F_WINDOW_UPDATE, 0, 0, C_RECEIVE_WINDOW - C_DEFAULT_WINDOW)

    def __dealloc__(self):
        PyMem_Free(self._out)

    # -- output ------------------------------------------------------------------------

    cdef unsigned char* _room(self, Py_ssize_t size) except NULL:
        """``size`` more bytes at the end of the output; where they start."""
        cdef Py_ssize_t need = self._len + size, cap = self._cap
        cdef unsigned char* grown
        if need > cap:
            while cap < need:
                cap *= 2
            grown = <unsigned char*>PyMem_Realloc(self._out, cap)
            if grown is NULL:
                raise MemoryError()
            self._out, self._cap = grown, cap
        self._len = need
        return self._out + need - size

    cdef int _frame(self, int kind, int flags, uint32_t stream, const char* payload, Py_ssize_t size) except -1:
        cdef unsigned char* at = _put_head(self._room(9 + size), size, kind, flags, stream)
        if size:
            memcpy(at, payload, size)
        return 0

    cdef int _frame_u32(self, int kind, int flags, uint32_t stream, uint32_t value) except -1:
        _put_u32(_put_head(self._room(13), 4, kind, flags, stream), value)
        return 0

    cdef int _frame_bytes(self, int kind, int flags, uint32_t stream, bytes payload) except -1:
        cdef Py_ssize_t size = PyBytes_GET_SIZE(payload)
        if size >= 1 << 24:  # the length does not fit the header: struct.pack fails in the pure twin
            raise _struct_error("'I' format requires 0 <= number <= 4294967295")
        return self._frame(kind, flags, stream, PyBytes_AS_STRING(payload), size)

    def take(self):
        out = PyBytes_FromStringAndSize(<char*>self._out, self._len)
        self._len = 0
        if self._cap > 65536:  # a large answer went out: do not keep its room for the connection's life
            PyMem_Free(self._out)
            self._cap = 4096
            self._out = <unsigned char*>PyMem_Malloc(self._cap)
            if self._out is NULL:
                self._cap = 0
                raise MemoryError()
        return out

    def send_headers(self, stream, headers, end_stream=False):
        self.send_block(stream, encode_headers(headers), end_stream)

    def send_block(self, stream, block, end_stream=False):
        """``send_headers`` with the block already encoded (``encode_headers``)."""
        cdef bint end = end_stream
        self._header_frames(_stream_id(stream), _as_bytes(block), end)
        if end:
            self._local_close(stream)

    def send_data(self, stream, data):
        cdef _Stream state = self._streams.get(stream)
        if state is None or state.local_closed:
            return
        if state.pending is None:
            state.pending = bytearray()
        state.pending += data
        self._pump(stream, state)

    def send_unary(self, stream, head, data, trailers):
        """A whole answer (HEADERS, one DATA, closing HEADERS) at once, when the windows and frame
        size let it go out now; False, with nothing sent, when it has to take the general path."""
        cdef _Stream state = self._streams.get(stream)
        cdef Py_ssize_t size = len(data), head_size, trailers_size
        cdef uint32_t sid
        cdef unsigned char* at
        if (state is None or state.local_closed or _has_pending(state) or size > self._send_window
                or size > state.send_window or size > self._peer_frame
                or len(head) > self._peer_frame or len(trailers) > self._peer_frame):
            return False
        self._send_window -= size
        state.send_window -= size
        head, data, trailers = _as_bytes(head), _as_bytes(data), _as_bytes(trailers)
        sid = stream
        head_size, trailers_size = PyBytes_GET_SIZE(head), PyBytes_GET_SIZE(trailers)
        at = _put_head(self._room(27 + head_size + size + trailers_size), head_size, F_HEADERS, F_END_HEADERS, sid)
        memcpy(at, PyBytes_AS_STRING(head), head_size)
        at = _put_head(at + head_size, size, F_DATA, 0, sid)
        memcpy(at, PyBytes_AS_STRING(data), size)
        at = _put_head(at + size, trailers_size, F_HEADERS, F_END_HEADERS | F_END_STREAM, sid)
        memcpy(at, PyBytes_AS_STRING(trailers), trailers_size)
        state.local_closed = True
        del self._streams[stream]
        if not state.remote_closed:  # what abandon() does for a stream the client still sends on
            self._forget(stream)
            self._frame_u32(F_RST_STREAM, 0, sid, E_NO_ERROR)
        return True

    def send_trailers(self, stream, headers):
        """The closing HEADERS, after every DATA queued so far has been sent."""
        self.send_trailers_block(stream, encode_headers(headers))

    def send_trailers_block(self, stream, block):
        cdef _Stream state = self._streams.get(stream)
        if state is None or state.local_closed:
            return
        state.trailers = _as_bytes(block)
        self._pump(stream, state)

    def abandon(self, stream):
        """The answer is complete: if the client is still sending, tell it to stop (RST_STREAM NO_ERROR)."""
        cdef _Stream state = self._streams.get(stream)
        if state is not None and state.local_closed and not state.remote_closed:
            del self._streams[stream]
            self._forget(stream)
            self._frame_u32(F_RST_STREAM, 0, <uint32_t>stream, E_NO_ERROR)

    def reset(self, stream, code=8):  # CANCEL, spelled out so inspect.signature can read the default
        if self._streams.pop(stream, None) is not None:
            self._forget(stream)
            self._frame_bytes(F_RST_STREAM, 0, <uint32_t>stream, code.to_bytes(4, "big"))

    cdef int _forget(self, object stream) except -1:
        """Remember a stream reset here for a while: the client may have frames for it in flight."""
        if len(self._reset_here) >= 1024:
            self._reset_here.clear()
        self._reset_here.add(stream)
        return 0

    def goaway(self, code=0, reason=b""):  # NO_ERROR, spelled out as for reset()
        if not self.closed:
            self.closed = True
            payload = (<object>self._last_stream).to_bytes(4, "big") + code.to_bytes(4, "big") + reason
            self._frame_bytes(F_GOAWAY, 0, 0, _as_bytes(payload))

    def open_streams(self):
        return len(self._streams)

    cdef int _header_frames(self, uint32_t stream, bytes block, bint end_stream) except -1:
        cdef Py_ssize_t size = self._peer_frame, total = PyBytes_GET_SIZE(block), at
        cdef const char* p = PyBytes_AS_STRING(block)
        at = min(size, total)
        self._frame(F_HEADERS, (F_END_STREAM if end_stream else 0) | (0 if total > size else F_END_HEADERS),
                    stream, p, at)
        while at < total:
            size = min(self._peer_frame, total - at)
            self._frame(F_CONTINUATION, 0 if at + size < total else F_END_HEADERS, stream, p + at, size)
            at += size
        return 0

    cdef int _pump(self, object stream, _Stream state) except -1:
        cdef bytearray pending = state.pending
        cdef long long size
        cdef uint32_t sid = stream
        while pending is not None and PyByteArray_GET_SIZE(pending):
            size = min(<long long>PyByteArray_GET_SIZE(pending), self._send_window, state.send_window,
                       self._peer_frame)
            if size <= 0:
                return 0
            self._frame(F_DATA, 0, sid, PyByteArray_AS_STRING(pending), size)
            del pending[:size]
            self._send_window -= size
            state.send_window -= size
        if state.trailers is not None:
            self._header_frames(sid, state.trailers, True)
            state.trailers = None
            self._local_close(stream)
        return 0

    cdef int _local_close(self, object stream) except -1:
        cdef _Stream state = self._streams.get(stream)
        if state is not None:
            state.local_closed = True
            if state.remote_closed:
                del self._streams[stream]
        return 0

    # -- input -------------------------------------------------------------------------

    def receive(self, bytes data not None):
        """Events for ``data``; raises H2Error (GOAWAY queued) when the peer broke the protocol."""
        cdef bytes buffer = self._buffer + data if PyBytes_GET_SIZE(self._buffer) else data
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(buffer)
        cdef Py_ssize_t position = 0, end = PyBytes_GET_SIZE(buffer), length, start
        cdef int kind, flags
        cdef long long stream, received = 0
        cdef list events
        if not self._preface:
            if end < _PREFACE_LEN:
                if memcmp(p, PyBytes_AS_STRING(_PREFACE), end):
                    self._fail(E_PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._buffer = buffer
                return []
            if memcmp(p, PyBytes_AS_STRING(_PREFACE), _PREFACE_LEN):
                self._fail(E_PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            position = _PREFACE_LEN
            self._preface = True
        events = []
        while end - position >= 9:
            length = (p[position] << 16) | (p[position + 1] << 8) | p[position + 2]
            if length > C_MAX_FRAME:
                self._fail(E_FRAME_SIZE_ERROR, f"a frame of {length} bytes (at most {MAX_FRAME})")
            if end - position - 9 < length:
                break
            kind, flags = p[position + 3], p[position + 4]
            stream = _u32(p + position + 5) & 0x7FFFFFFF
            start = position + 9
            position = start + length
            if self._block_stream and kind != F_CONTINUATION:
                self._fail(E_PROTOCOL_ERROR, "a header block was interrupted")
            if kind == F_DATA:
                received += self._data(buffer, stream, flags, start, position, events)
            elif kind == F_HEADERS:
                self._headers(buffer, stream, flags, start, position, events)
            elif kind == F_CONTINUATION:
                self._continuation(buffer, stream, flags, start, position, events)
            elif kind == F_SETTINGS:
                self._settings(buffer, stream, flags, start, position)
            elif kind == F_WINDOW_UPDATE:
                self._window_update(buffer, stream, start, position)
            elif kind == F_PING:
                if length != 8 or stream:
                    self._fail(E_FRAME_SIZE_ERROR if length != 8 else E_PROTOCOL_ERROR, "a malformed PING")
                if not flags & F_ACK:
                    self._frame(F_PING, F_ACK, 0, <const char*>p + start, 8)
            elif kind == F_RST_STREAM:
                if length != 4 or not stream:
                    self._fail(E_PROTOCOL_ERROR, "a malformed RST_STREAM")
                if self._streams.pop(stream, None) is not None:
                    events.append(("reset", stream, _u32(p + start)))
            elif kind == F_GOAWAY:
                self.closed = True
            elif kind == F_PUSH_PROMISE:
                self._fail(E_PROTOCOL_ERROR, "a client cannot push")
            # PRIORITY and unknown frame types are ignored, as the protocol asks.
        if position == end:
            self._buffer = b""
        elif position:
            self._buffer = buffer[position:]
        else:
            self._buffer = buffer
        self._consumed += received
        if self._consumed >= RECEIVE_WINDOW // 2:  # given back in halves: no WINDOW_UPDATE per request
            self._frame_u32(F_WINDOW_UPDATE, 0, 0, self._consumed)
            self._consumed = 0
        return events

    cdef int _fail(self, int code, str reason) except -1:
        self.closed = True  # a GOAWAY even after a graceful one: this one carries the error
        cdef bytes text = reason.encode()[:200]
        cdef unsigned char* at = _put_head(self._room(17 + len(text)), 8 + len(text), F_GOAWAY, 0, 0)
        _put_u32(at, self._last_stream)
        _put_u32(at + 4, code)
        memcpy(at + 8, PyBytes_AS_STRING(text), len(text))
        raise _H2Error(code, reason)

    cdef int _strip(self, bytes buffer, int flags, Py_ssize_t* start, Py_ssize_t* stop, bint priority) except -1:
        """Narrow the payload ``buffer[start:stop]`` to the field block or data (padding, priority off)."""
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(buffer)
        if flags & F_PADDED:
            if start[0] == stop[0] or p[start[0]] >= stop[0] - start[0]:
                self._fail(E_PROTOCOL_ERROR, "padding longer than the frame")
            stop[0] -= p[start[0]]
            start[0] += 1
        if priority and flags & F_PRIORITY_FLAG:
            if stop[0] - start[0] < 5:
                self._fail(E_FRAME_SIZE_ERROR, "a HEADERS frame too short for its priority")
            start[0] += 5
        return 0

    cdef long long _data(self, bytes buffer, long long stream, int flags, Py_ssize_t start, Py_ssize_t stop,
                         list events) except -1:
        if not stream:
            self._fail(E_PROTOCOL_ERROR, "DATA on stream 0")
        cdef long long flow = stop - start
        cdef object key = stream
        cdef _Stream state = self._streams.get(key)
        cdef bint end_stream
        self._strip(buffer, flags, &start, &stop, False)
        if state is None or state.remote_closed:
            if stream > self._last_stream:
                self._fail(E_PROTOCOL_ERROR, "DATA on a stream that was never opened")
            return flow  # a stream reset or finished here: count it for the connection only
        end_stream = flags & F_END_STREAM
        if end_stream:
            self._remote_close(key, state)
        elif flow:
            self._frame_u32(F_WINDOW_UPDATE, 0, stream, flow)
        events.append(("data", key, PyBytes_FromStringAndSize(PyBytes_AS_STRING(buffer) + start, stop - start),
                       end_stream))
        return flow

    cdef int _headers(self, bytes buffer, long long stream, int flags, Py_ssize_t start, Py_ssize_t stop,
                      list events) except -1:
        if not stream or not stream & 1:
            self._fail(E_PROTOCOL_ERROR, f"HEADERS on stream {stream}")
        self._strip(buffer, flags, &start, &stop, True)
        self._block_end_stream = flags & F_END_STREAM
        if flags & F_END_HEADERS:
            self._header_block(stream, buffer[start:stop], events)
        else:
            self._block_stream = stream
            self._block[:] = buffer[start:stop]
        return 0

    cdef int _continuation(self, bytes buffer, long long stream, int flags, Py_ssize_t start, Py_ssize_t stop,
                           list events) except -1:
        if stream != self._block_stream or not stream:
            self._fail(E_PROTOCOL_ERROR, "CONTINUATION without a header block")
        self._block += buffer[start:stop]
        if PyByteArray_GET_SIZE(self._block) > C_MAX_HEADER_BLOCK:
            self._fail(E_PROTOCOL_ERROR, "a header block over 64 KiB")
        if flags & F_END_HEADERS:
            self._block_stream = 0
            self._header_block(stream, bytes(self._block), events)
            del self._block[:]
        return 0

    cdef object _decode(self, bytes block):
        """The block's fields. Clients send the same block again and again (every call of a method
        with the same metadata); one that left the decoding table as it was is kept, and reused
        for as long as the table does not change."""
        # The newest entry itself, not its id(): the cache keeps it alive, so no later entry can
        # take its address and make a changed table look unchanged. The table's state is read
        # after each decode (only decoding changes it), not before each lookup.
        cdef tuple cached = self._decoded.get(block)
        cdef tuple state
        if cached is not None and cached[1] is self._table_newest:
            state = cached[0]
            if state[0] == self._table_len and state[1] == self._table_max:
                return cached[2]
        count, maxsize, newest = self._table_len, self._table_max, self._table_newest
        try:
            headers = self._decoder.decode(block, raw=True)
        except _HPACKError as exc:
            # hpack's message can hold a memory address: only its kind goes into the GOAWAY
            self._fail(E_COMPRESSION_ERROR, f"a header block that does not decode ({type(exc).__name__})")
        finally:
            self._read_table()
        if self._table_len == count and self._table_max == maxsize and self._table_newest is newest:
            if len(self._decoded) >= 64:
                self._decoded.clear()
            self._decoded[block] = ((count, maxsize), newest, headers)
        return headers

    cdef int _read_table(self) except -1:
        """The decoding table's state: entry count, size limit, newest entry (None when empty)."""
        table = self._decoder.header_table
        entries = table.dynamic_entries
        self._table_len = len(entries)
        self._table_max = table.maxsize
        self._table_newest = entries[0] if self._table_len else None
        return 0

    cdef int _header_block(self, long long stream, bytes block, list events) except -1:
        headers = self._decode(block)
        cdef bint end_stream = self._block_end_stream
        cdef object key = stream
        cdef _Stream state = self._streams.get(key)
        if state is not None:  # trailers of a request
            if state.remote_closed:  # the client ended this stream already (RFC 9113 5.1: STREAM_CLOSED)
                del self._streams[key]
                self._frame_u32(F_RST_STREAM, 0, stream, E_STREAM_CLOSED)
                events.append(("reset", key, E_STREAM_CLOSED))
                return 0
            if not end_stream:
                self._fail(E_PROTOCOL_ERROR, "a second HEADERS without END_STREAM")
            self._remote_close(key, state)
            events.append(("data", key, b"", True))
            return 0
        if stream <= self._last_stream:
            if key in self._reset_here:  # frames already in flight on a stream this side reset: ignored
                return 0
            self._fail(E_PROTOCOL_ERROR, f"stream {stream} is not new")
        self._last_stream = stream
        if self.closed:  # after GOAWAY: new streams are ignored, and so are their frames in flight
            self._forget(key)
            return 0
        if len(self._streams) >= C_MAX_STREAMS:
            self._forget(key)  # its frames in flight are ignored, as a reset stream's are
            self._frame_u32(F_RST_STREAM, 0, stream, E_REFUSED_STREAM)
            return 0
        state = _new_stream(self._peer_window)
        self._streams[key] = state
        state.remote_closed = end_stream
        events.append(("headers", key, headers, end_stream, block))
        return 0

    cdef int _remote_close(self, object stream, _Stream state) except -1:
        state.remote_closed = True
        if state.local_closed:
            del self._streams[stream]
        return 0

    cdef int _settings(self, bytes buffer, long long stream, int flags, Py_ssize_t start, Py_ssize_t stop) except -1:
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(buffer)
        cdef Py_ssize_t offset
        cdef int key
        cdef long long value, delta
        cdef _Stream state
        if stream:
            self._fail(E_PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & F_ACK:
            if stop > start:
                self._fail(E_FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload")
            return 0
        if (stop - start) % 6:
            self._fail(E_FRAME_SIZE_ERROR, "a SETTINGS frame of a length not a multiple of 6")
        for offset in range(start, stop, 6):
            key = (p[offset] << 8) | p[offset + 1]
            value = _u32(p + offset + 2)
            if key == S_INITIAL_WINDOW_SIZE:
                if value > C_MAX_WINDOW:
                    self._fail(E_FLOW_CONTROL_ERROR, "an initial window over 2^31-1")
                delta, self._peer_window = value - self._peer_window, value
                for state in self._streams.values():
                    state.send_window += delta
            elif key == S_MAX_FRAME_SIZE:
                if not C_MAX_FRAME <= value <= 16777215:
                    self._fail(E_PROTOCOL_ERROR, f"a maximum frame size of {value}")
                self._peer_frame = value
        self._frame(F_SETTINGS, F_ACK, 0, NULL, 0)
        for key_obj, state in list(self._streams.items()):
            self._pump(key_obj, state)
        return 0

    cdef int _window_update(self, bytes buffer, long long stream, Py_ssize_t start, Py_ssize_t stop) except -1:
        cdef long long increment
        cdef _Stream state
        if stop - start != 4:
            self._fail(E_FRAME_SIZE_ERROR, "a WINDOW_UPDATE not of 4 bytes")
        increment = _u32(<const unsigned char*>PyBytes_AS_STRING(buffer) + start) & 0x7FFFFFFF
        if not increment:
            self._fail(E_PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
        if not stream:
            self._send_window += increment
            if self._send_window > C_MAX_WINDOW:
                self._fail(E_FLOW_CONTROL_ERROR, "the connection window over 2^31-1")
            for key_obj, state in list(self._streams.items()):
                if _has_pending(state) or state.trailers is not None:
                    self._pump(key_obj, state)
            return 0
        state = self._streams.get(stream)
        if state is not None:
            state.send_window += increment
            self._pump(stream, state)
        return 0
