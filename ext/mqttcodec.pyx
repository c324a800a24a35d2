# cython: embedsignature=True, embedsignature.format=clinic
"""MQTT 3.1.1 / 5.0 packet codec, sans-IO; compiled twin of ``pillion._pure.mqttcodec``.

The pure module is the specification: same names, same results, same reason codes.
"""

cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memcpy

# Declarations stay in this file: a sibling .pxd is silently ignored for a module named
# pillion._ext.<name> (ext/README.md, "Sharing declarations").

from pillion.broker import packets as _p
from pillion.broker.packets import MQTTDecodeError

__all__ = ["decode", "encode", "MQTTDecodeError"]

cdef object _Connect = _p.Connect
cdef object _Connack = _p.Connack
cdef object _Publish = _p.Publish
cdef object _Puback = _p.Puback
cdef object _Pubrec = _p.Pubrec
cdef object _Pubrel = _p.Pubrel
cdef object _Pubcomp = _p.Pubcomp
cdef object _Subscribe = _p.Subscribe
cdef object _SubscriptionOptions = _p.SubscriptionOptions
cdef object _Suback = _p.Suback
cdef object _Unsubscribe = _p.Unsubscribe
cdef object _Unsuback = _p.Unsuback
cdef object _Pingreq = _p.Pingreq
cdef object _Pingresp = _p.Pingresp
cdef object _Disconnect = _p.Disconnect
cdef object _Auth = _p.Auth
cdef object _Will = _p.Will
cdef object _MQTTDecodeError = MQTTDecodeError
cdef dict _PROPERTY_BY_ID = _p.PROPERTY_BY_ID
cdef dict _PROPERTY_BY_NAME = _p.PROPERTY_BY_NAME
cdef frozenset _LIST_PROPERTIES = _p.LIST_PROPERTIES
cdef frozenset _BOOLEAN_PROPERTIES = _p.BOOLEAN_PROPERTIES
cdef frozenset _NONZERO_PROPERTIES = _p.NONZERO_PROPERTIES

cdef enum:
    PKT_WILL = 0
    PKT_CONNECT = 1
    PKT_CONNACK = 2
    PKT_PUBLISH = 3
    PKT_PUBACK = 4
    PKT_PUBREC = 5
    PKT_PUBREL = 6
    PKT_PUBCOMP = 7
    PKT_SUBSCRIBE = 8
    PKT_SUBACK = 9
    PKT_UNSUBSCRIBE = 10
    PKT_UNSUBACK = 11
    PKT_PINGREQ = 12
    PKT_PINGRESP = 13
    PKT_DISCONNECT = 14
    PKT_AUTH = 15
    PROP_BYTE = 1
    PROP_TWO_BYTE_INT = 2
    PROP_FOUR_BYTE_INT = 3
    PROP_VARINT = 4
    PROP_UTF8 = 5
    PROP_BINARY = 6
    PROP_UTF8_PAIR = 7
    RC_MALFORMED_PACKET = 0x81
    RC_PROTOCOL_ERROR = 0x82
    RC_UNSUPPORTED_PROTOCOL_VERSION = 0x84
    RC_TOPIC_NAME_INVALID = 0x90
    RC_PACKET_TOO_LARGE = 0x95

from pillion.broker.packets import MAX_PACKET_SIZE
cdef Py_ssize_t MAX_VARINT = 268435455


# One packet's body: p[pos:end]. The buffer stays alive in decode()'s memoryview.
cdef struct _Cur:
    const unsigned char* p
    Py_ssize_t pos
    Py_ssize_t end


cdef inline object _malformed(str message):
    return _MQTTDecodeError(message, RC_MALFORMED_PACKET)


cdef inline object _protocol(str message):
    return _MQTTDecodeError(message, RC_PROTOCOL_ERROR)


cdef inline int _need(_Cur* c, Py_ssize_t size) except -1:
    if c.pos + size > c.end:
        raise _malformed("packet ends inside a field")
    return 0


cdef inline int _byte(_Cur* c) except -1:
    _need(c, 1)
    c.pos += 1
    return c.p[c.pos - 1]


cdef inline int _u16(_Cur* c) except -1:
    _need(c, 2)
    c.pos += 2
    return (<int>c.p[c.pos - 2]) << 8 | c.p[c.pos - 1]


cdef inline long long _u32(_Cur* c) except -1:
    _need(c, 4)
    cdef const unsigned char* q = c.p + c.pos
    c.pos += 4
    return (<long long>q[0]) << 24 | (<long long>q[1]) << 16 | (<long long>q[2]) << 8 | q[3]


cdef long long _varint(_Cur* c) except -1:
    cdef long long value = 0
    cdef int shift, byte
    for shift in range(0, 28, 7):
        byte = _byte(c)
        value |= (<long long>(byte & 0x7F)) << shift
        if not byte & 0x80:
            return value
    raise _malformed("variable byte integer longer than 4 bytes")


cdef bytes _binary(_Cur* c):
    cdef int size = _u16(c)
    _need(c, size)
    c.pos += size
    return PyBytes_FromStringAndSize(<const char*>(c.p + c.pos - size), size)


cdef str _utf8(_Cur* c):
    cdef int size = _u16(c)
    cdef str text
    _need(c, size)
    c.pos += size
    try:
        text = PyUnicode_DecodeUTF8(<const char*>(c.p + c.pos - size), size, NULL)
    except UnicodeDecodeError:
        raise _malformed("invalid UTF-8 string [MQTT-1.5.4-1]") from None
    if "\x00" in text:
        raise _malformed("UTF-8 string contains U+0000 [MQTT-1.5.4-2]")
    return text


cdef bytes _rest(_Cur* c):
    cdef Py_ssize_t pos = c.pos
    c.pos = c.end
    return PyBytes_FromStringAndSize(<const char*>(c.p + pos), c.end - pos)


cdef int _packet_id(_Cur* c) except -1:
    cdef int packet_id = _u16(c)
    if packet_id == 0:
        raise _protocol("packet identifier 0 [MQTT-2.2.1-3]")
    return packet_id


cdef dict _properties(_Cur* c, int packet_type):
    cdef Py_ssize_t size = _varint(c)
    _need(c, size)
    cdef Py_ssize_t end = c.pos + size
    cdef Py_ssize_t outer_end = c.end
    cdef dict props = {}
    cdef int kind
    cdef object value, prop
    cdef str name
    cdef list values
    c.end = end
    while c.pos < end:
        prop = _PROPERTY_BY_ID.get(_varint(c))
        if prop is None or packet_type not in prop.packets:
            raise _malformed("property not valid for this packet [MQTT-2.2.2-1]")
        kind = prop.type
        if kind == PROP_BYTE:
            value = _byte(c)
        elif kind == PROP_TWO_BYTE_INT:
            value = _u16(c)
        elif kind == PROP_FOUR_BYTE_INT:
            value = _u32(c)
        elif kind == PROP_VARINT:
            value = _varint(c)
        elif kind == PROP_UTF8:
            value = _utf8(c)
        elif kind == PROP_BINARY:
            value = _binary(c)
        else:
            key = _utf8(c)
            value = (key, _utf8(c))
        name = prop.name
        if name in _BOOLEAN_PROPERTIES and value > 1:
            raise _protocol(f"{name} must be 0 or 1")
        if name in _NONZERO_PROPERTIES and value == 0:
            raise _protocol(f"{name} must not be 0")
        if name in _LIST_PROPERTIES:
            values = props.get(name)
            if values is None:
                props[name] = [value]
            elif name == "user_property" or packet_type == PKT_PUBLISH:
                values.append(value)
            else:
                raise _protocol(f"{name} included more than once")
        elif name in props:
            raise _protocol(f"{name} included more than once")
        else:
            props[name] = value
    c.end = outer_end
    return props


cdef inline int _check_topic_name(str topic) except -1:
    if "+" in topic or "#" in topic:
        raise _MQTTDecodeError("wildcard in a topic name [MQTT-3.3.2-2]", RC_TOPIC_NAME_INVALID)
    return 0


cdef object _decode_connect(_Cur* c):
    cdef str name = _utf8(c)
    cdef int level = _byte(c)
    cdef int cflags, will_qos, keepalive
    cdef bint v5, will_flag, will_retain
    cdef str topic
    if level != 3 and level != 4 and level != 5:
        raise _MQTTDecodeError(f"unsupported protocol level {level}", RC_UNSUPPORTED_PROTOCOL_VERSION)
    if name != ("MQIsdp" if level == 3 else "MQTT"):
        raise _protocol(f"protocol name {name!r} for level {level} [MQTT-3.1.2-1]")
    v5 = level == 5
    cflags = _byte(c)
    if cflags & 0x01:
        raise _malformed("CONNECT reserved flag set [MQTT-3.1.2-3]")
    will_flag = (cflags & 0x04) != 0
    will_qos = (cflags >> 3) & 0x03
    will_retain = (cflags & 0x20) != 0
    if will_qos == 3:
        raise _malformed("will QoS 3 [MQTT-3.1.2-14]")
    if not will_flag and (will_qos or will_retain):
        raise _malformed("will QoS or retain without will flag [MQTT-3.1.2-11]")
    if not v5 and cflags & 0x40 and not cflags & 0x80:
        raise _malformed("password flag without user name flag [MQTT-3.1.2-22]")
    keepalive = _u16(c)
    props = _properties(c, PKT_CONNECT) if v5 else {}
    client_id = _utf8(c)
    will = None
    if will_flag:
        will_props = _properties(c, PKT_WILL) if v5 else {}
        topic = _utf8(c)
        _check_topic_name(topic)
        will = _Will(topic, _binary(c), will_qos, will_retain, will_props)
    username = _utf8(c) if cflags & 0x80 else None
    password = _binary(c) if cflags & 0x40 else None
    return _Connect(name, level, (cflags & 0x02) != 0, keepalive, client_id, will, username, password, props)


cdef object _decode_connack(_Cur* c, int level):
    cdef int ack = _byte(c)
    if ack & 0xFE:
        raise _malformed("CONNACK reserved flags set [MQTT-3.2.2-1]")
    cdef int code = _byte(c)
    return _Connack(ack != 0, code, _properties(c, PKT_CONNACK) if level == 5 else {})


cdef object _decode_publish(_Cur* c, int flags, int level):
    cdef int qos = (flags >> 1) & 0x03
    cdef str topic = _utf8(c)
    _check_topic_name(topic)
    packet_id = _packet_id(c) if qos else None
    cdef dict props = _properties(c, PKT_PUBLISH) if level == 5 else {}
    if not topic and "topic_alias" not in props:
        raise _protocol("empty topic name [MQTT-4.7.3-1]")
    return _Publish(topic, _rest(c), qos, (flags & 0x01) != 0, (flags & 0x08) != 0, packet_id, props)


cdef object _decode_ack(_Cur* c, int level, int packet_type):
    cdef int packet_id = _packet_id(c)
    cdef int code = 0
    cdef dict props = {}
    if level == 5 and c.pos < c.end:
        code = _byte(c)
        if c.pos < c.end:
            props = _properties(c, packet_type)
    if packet_type == PKT_PUBACK:
        return _Puback(packet_id, code, props)
    if packet_type == PKT_PUBREC:
        return _Pubrec(packet_id, code, props)
    if packet_type == PKT_PUBREL:
        return _Pubrel(packet_id, code, props)
    return _Pubcomp(packet_id, code, props)


cdef object _decode_subscribe(_Cur* c, int level):
    cdef int packet_id = _packet_id(c)
    cdef bint v5 = level == 5
    cdef dict props = _properties(c, PKT_SUBSCRIBE) if v5 else {}
    cdef list topics = []
    cdef int options, qos, retain_handling
    while c.pos < c.end:
        topic = _utf8(c)
        options = _byte(c)
        if options & (0xC0 if v5 else 0xFC):
            raise _malformed("subscription options reserved bits set [MQTT-3.8.3-5]")
        qos = options & 0x03
        if qos == 3:
            raise _malformed("subscription QoS 3 [MQTT-3-8.3-4]")
        retain_handling = (options >> 4) & 0x03
        if retain_handling == 3:
            raise _protocol("retain handling 3")
        topics.append(
            (topic, _SubscriptionOptions(qos, (options & 0x04) != 0, (options & 0x08) != 0, retain_handling))
        )
    if not topics:
        raise _protocol("SUBSCRIBE without topic filters [MQTT-3.8.3-3]")
    return _Subscribe(packet_id, topics, props)


cdef object _decode_suback(_Cur* c, int level):
    cdef int packet_id = _packet_id(c)
    cdef dict props = _properties(c, PKT_SUBACK) if level == 5 else {}
    return _Suback(packet_id, list(_rest(c)), props)


cdef object _decode_unsubscribe(_Cur* c, int level):
    cdef int packet_id = _packet_id(c)
    cdef dict props = _properties(c, PKT_UNSUBSCRIBE) if level == 5 else {}
    cdef list topics = []
    while c.pos < c.end:
        topics.append(_utf8(c))
    if not topics:
        raise _protocol("UNSUBSCRIBE without topic filters [MQTT-3.10.3-2]")
    return _Unsubscribe(packet_id, topics, props)


cdef object _decode_unsuback(_Cur* c, int level):
    cdef int packet_id = _packet_id(c)
    if level != 5:
        return _Unsuback(packet_id)
    cdef dict props = _properties(c, PKT_UNSUBACK)
    return _Unsuback(packet_id, list(_rest(c)), props)


cdef object _decode_reason(_Cur* c, int level, int packet_type, object cls):
    cdef int code = 0
    cdef dict props = {}
    if level == 5 and c.pos < c.end:
        code = _byte(c)
        if c.pos < c.end:
            props = _properties(c, packet_type)
    return cls(code, props)


def decode(data, int protocol_level, Py_ssize_t max_packet_size=MAX_PACKET_SIZE):
    """Decode one packet from the start of ``data``: ``(packet, consumed)`` or ``(None, 0)``.

    See ``pillion._pure.mqttcodec.decode``.
    """
    if protocol_level != 0 and protocol_level != 3 and protocol_level != 4 and protocol_level != 5:
        raise ValueError(f"protocol_level must be 0, 3, 4 or 5, not {protocol_level!r}")
    cdef const unsigned char[:] view = data
    cdef Py_ssize_t size = view.shape[0]
    if size == 0:
        return None, 0
    cdef const unsigned char* p = &view[0]
    cdef int first = p[0]
    cdef int packet_type = first >> 4
    cdef int flags = first & 0x0F
    if protocol_level == 0 and packet_type != PKT_CONNECT:
        raise _protocol("first packet is not CONNECT [MQTT-3.1.0-1]")
    if packet_type == 0 or (packet_type == PKT_AUTH and protocol_level != 5):
        raise _malformed(f"reserved packet type {packet_type}")
    if packet_type == PKT_PUBLISH:
        if flags & 0x06 == 0x06:
            raise _malformed("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
    elif flags != (0x02 if packet_type == PKT_PUBREL or packet_type == PKT_SUBSCRIBE
                   or packet_type == PKT_UNSUBSCRIBE else 0):
        raise _malformed(f"reserved fixed header flags {flags:#06b} for packet type {packet_type} [MQTT-2.2.2-2]")
    cdef Py_ssize_t remaining = 0
    cdef Py_ssize_t pos = 1
    cdef int shift = 0
    cdef int byte
    while True:
        if pos == 5:
            raise _malformed("remaining length longer than 4 bytes")
        if pos >= size:
            return None, 0
        byte = p[pos]
        pos += 1
        remaining |= (<Py_ssize_t>(byte & 0x7F)) << shift
        if not byte & 0x80:
            break
        shift += 7
    cdef Py_ssize_t total = pos + remaining
    if total > max_packet_size:
        raise _MQTTDecodeError(f"packet of {total} bytes exceeds {max_packet_size}", RC_PACKET_TOO_LARGE)
    if size < total:
        return None, 0
    cdef _Cur c
    c.p = p
    c.pos = pos
    c.end = total
    cdef int level = protocol_level
    if packet_type == PKT_CONNECT:
        packet = _decode_connect(&c)
    elif packet_type == PKT_PUBLISH:
        packet = _decode_publish(&c, flags, level)
    elif PKT_PUBACK <= packet_type <= PKT_PUBCOMP:
        packet = _decode_ack(&c, level, packet_type)
    elif packet_type == PKT_CONNACK:
        packet = _decode_connack(&c, level)
    elif packet_type == PKT_SUBSCRIBE:
        packet = _decode_subscribe(&c, level)
    elif packet_type == PKT_SUBACK:
        packet = _decode_suback(&c, level)
    elif packet_type == PKT_UNSUBSCRIBE:
        packet = _decode_unsubscribe(&c, level)
    elif packet_type == PKT_UNSUBACK:
        packet = _decode_unsuback(&c, level)
    elif packet_type == PKT_PINGREQ:
        packet = _Pingreq()
    elif packet_type == PKT_PINGRESP:
        packet = _Pingresp()
    elif packet_type == PKT_DISCONNECT:
        packet = _decode_reason(&c, level, PKT_DISCONNECT, _Disconnect)
    else:
        packet = _decode_reason(&c, level, PKT_AUTH, _Auth)
    if c.pos != total:
        raise _malformed("bytes left over inside the packet")
    return packet, total


# Encoding: same rules and the same ValueErrors as the pure twin.

cdef int _w_varint(bytearray out, Py_ssize_t value) except -1:
    cdef int byte
    if value < 0 or value > MAX_VARINT:
        raise ValueError(f"variable byte integer out of range: {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return 0


cdef inline int _w_u16(bytearray out, int value) except -1:
    if value < 0 or value > 0xFFFF:
        raise OverflowError(f"{value} does not fit in two bytes")
    out.append(value >> 8)
    out.append(value & 0xFF)
    return 0


cdef int _w_binary(bytearray out, bytes value) except -1:
    cdef Py_ssize_t size = len(value)
    if size > 0xFFFF:
        raise ValueError("string or binary field longer than 65535 bytes")
    out.append(size >> 8)
    out.append(size & 0xFF)
    out += value
    return 0


cdef inline int _w_utf8(bytearray out, str value) except -1:
    return _w_binary(out, value.encode("utf-8"))


cdef int _w_property(bytearray out, int ident, int kind, object value) except -1:
    out.append(ident)
    if kind == PROP_BYTE:
        out.append(value)
    elif kind == PROP_TWO_BYTE_INT:
        out += value.to_bytes(2, "big")
    elif kind == PROP_FOUR_BYTE_INT:
        out += value.to_bytes(4, "big")
    elif kind == PROP_VARINT:
        _w_varint(out, value)
    elif kind == PROP_UTF8:
        _w_utf8(out, value)
    elif kind == PROP_BINARY:
        _w_binary(out, value)
    else:
        _w_utf8(out, value[0])
        _w_utf8(out, value[1])
    return 0


cdef int _w_properties(bytearray out, dict props) except -1:
    if not props:
        out.append(0)
        return 0
    cdef bytearray body = bytearray()
    for name, value in props.items():
        prop = _PROPERTY_BY_NAME.get(name)
        if prop is None:
            raise ValueError(f"unknown MQTT property {name!r}")
        if name in _LIST_PROPERTIES:
            for item in value:
                _w_property(body, prop.id, prop.type, item)
        else:
            _w_property(body, prop.id, prop.type, value)
    _w_varint(out, len(body))
    out += body
    return 0


cdef int _w_reason(bytearray out, int code, dict props) except -1:
    if code or props:
        out.append(code)
        if props:
            _w_properties(out, props)
    return 0


def encode(packet, int protocol_level):
    """Encode one packet for a peer speaking ``protocol_level`` (3, 4 or 5).

    See ``pillion._pure.mqttcodec.encode``.
    """
    cdef bint v5 = protocol_level == 5
    # The fixed header is written into the 5 bytes reserved in front of the body.
    cdef bytearray body = bytearray(5)
    cdef int first, qos, cflags, level
    cls = type(packet)
    if cls is _Publish:
        qos = packet.qos
        first = 0x30 | (<int>packet.dup) << 3 | qos << 1 | (<int>packet.retain)
        _w_utf8(body, packet.topic)
        if qos:
            _w_u16(body, packet.packet_id)
        if v5:
            _w_properties(body, packet.properties)
        body += packet.payload
    elif cls is _Puback or cls is _Pubrec or cls is _Pubrel or cls is _Pubcomp:
        first = 0x62 if cls is _Pubrel else (0x40 if cls is _Puback else 0x50 if cls is _Pubrec else 0x70)
        _w_u16(body, packet.packet_id)
        if v5:
            _w_reason(body, packet.reason_code, packet.properties)
    elif cls is _Connect:
        level = packet.protocol_level
        v5 = level == 5
        first = 0x10
        _w_utf8(body, packet.protocol_name)
        body.append(level)
        will = packet.will
        cflags = (<int>packet.clean_start) << 1
        if will is not None:
            cflags |= 0x04 | (<int>will.qos) << 3 | (<int>will.retain) << 5
        if packet.password is not None:
            cflags |= 0x40
        if packet.username is not None:
            cflags |= 0x80
        body.append(cflags)
        _w_u16(body, packet.keepalive)
        if v5:
            _w_properties(body, packet.properties)
        _w_utf8(body, packet.client_id)
        if will is not None:
            if v5:
                _w_properties(body, will.properties)
            _w_utf8(body, will.topic)
            _w_binary(body, will.payload)
        if packet.username is not None:
            _w_utf8(body, packet.username)
        if packet.password is not None:
            _w_binary(body, packet.password)
    elif cls is _Connack:
        first = 0x20
        body.append(1 if packet.session_present else 0)
        body.append(packet.reason_code)
        if v5:
            _w_properties(body, packet.properties)
    elif cls is _Subscribe:
        first = 0x82
        _w_u16(body, packet.packet_id)
        if v5:
            _w_properties(body, packet.properties)
        for topic, options in packet.topics:
            _w_utf8(body, topic)
            if v5:
                body.append(options.qos | (<int>options.no_local) << 2 | (<int>options.retain_as_published) << 3
                            | (<int>options.retain_handling) << 4)
            else:
                body.append(options.qos)
    elif cls is _Suback or cls is _Unsuback:
        first = 0x90 if cls is _Suback else 0xB0
        _w_u16(body, packet.packet_id)
        if v5:
            _w_properties(body, packet.properties)
        if v5 or cls is _Suback:
            body += bytes(packet.reason_codes)
    elif cls is _Unsubscribe:
        first = 0xA2
        _w_u16(body, packet.packet_id)
        if v5:
            _w_properties(body, packet.properties)
        for topic in packet.topics:
            _w_utf8(body, topic)
    elif cls is _Pingreq:
        first = 0xC0
    elif cls is _Pingresp:
        first = 0xD0
    elif cls is _Disconnect:
        first = 0xE0
        if v5:
            _w_reason(body, packet.reason_code, packet.properties)
    elif cls is _Auth:
        if not v5:
            raise ValueError("AUTH exists only in MQTT 5")
        first = 0xF0
        _w_reason(body, packet.reason_code, packet.properties)
    else:
        raise TypeError(f"not an MQTT packet: {packet!r}")
    cdef Py_ssize_t remaining = len(body) - 5
    if remaining > MAX_VARINT:
        raise ValueError(f"variable byte integer out of range: {remaining}")
    cdef unsigned char varint[4]
    cdef int size = 0
    while True:
        varint[size] = remaining & 0x7F
        remaining >>= 7
        if remaining:
            varint[size] |= 0x80
            size += 1
        else:
            size += 1
            break
    cdef unsigned char* buf = <unsigned char*>PyByteArray_AS_STRING(body)
    cdef Py_ssize_t start = 4 - size
    buf[start] = first
    memcpy(buf + start + 1, varint, size)
    return PyBytes_FromStringAndSize(<char*>buf + start, len(body) - start)
