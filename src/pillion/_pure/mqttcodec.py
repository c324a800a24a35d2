"""MQTT 3.1.1 / 5.0 packet codec, sans-IO; pure twin of ``pillion._ext.mqttcodec``.

Owns the wire format: fixed header, remaining length, every control packet's fields,
MQTT 5 properties, and every check the specs make a decode error. Takes bytes and
returns one packet and the number of bytes it used; keeps no state between calls (the
caller holds the buffer and the protocol level from CONNECT). No sockets, no sessions.

``decode(data, level)`` returns ``(None, 0)`` until ``data`` holds a whole packet, so the
caller can append and retry. Level 0 means "before CONNECT": the first packet must be
CONNECT, which carries its own level. The size limit is checked from the fixed header
alone, before waiting for the body.
"""

from __future__ import annotations

from pillion.broker.packets import (
    BOOLEAN_PROPERTIES,
    LIST_PROPERTIES,
    MAX_PACKET_SIZE,
    NONZERO_PROPERTIES,
    PKT_AUTH,
    PKT_CONNACK,
    PKT_CONNECT,
    PKT_DISCONNECT,
    PKT_PUBACK,
    PKT_PUBCOMP,
    PKT_PUBLISH,
    PKT_PUBREC,
    PKT_PUBREL,
    PKT_SUBACK,
    PKT_SUBSCRIBE,
    PKT_UNSUBACK,
    PKT_UNSUBSCRIBE,
    PKT_WILL,
    PROP_BINARY,
    PROP_BYTE,
    PROP_FOUR_BYTE_INT,
    PROP_TWO_BYTE_INT,
    PROP_UTF8,
    PROP_VARINT,
    PROPERTY_BY_ID,
    PROPERTY_BY_NAME,
    RC_MALFORMED_PACKET,
    RC_PACKET_TOO_LARGE,
    RC_PROTOCOL_ERROR,
    RC_TOPIC_NAME_INVALID,
    RC_UNSUPPORTED_PROTOCOL_VERSION,
    Auth,
    Connack,
    Connect,
    Disconnect,
    MQTTDecodeError,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    SubscriptionOptions,
    Unsuback,
    Unsubscribe,
    Will,
)

__all__ = ["decode", "encode", "MQTTDecodeError"]

_ACK_CLASSES = {PKT_PUBACK: Puback, PKT_PUBREC: Pubrec, PKT_PUBREL: Pubrel, PKT_PUBCOMP: Pubcomp}


def _malformed(message: str) -> MQTTDecodeError:
    return MQTTDecodeError(message, RC_MALFORMED_PACKET)


def _protocol(message: str) -> MQTTDecodeError:
    return MQTTDecodeError(message, RC_PROTOCOL_ERROR)


class _Reader:
    """Cursor over one packet's body, ``data[pos:end]``; reading past ``end`` is malformed."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end

    def need(self, size: int) -> None:
        if self.pos + size > self.end:
            raise _malformed("packet ends inside a field")

    def byte(self) -> int:
        self.need(1)
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u16(self) -> int:
        self.need(2)
        data, pos = self.data, self.pos
        self.pos = pos + 2
        return data[pos] << 8 | data[pos + 1]

    def u32(self) -> int:
        self.need(4)
        data, pos = self.data, self.pos
        self.pos = pos + 4
        return data[pos] << 24 | data[pos + 1] << 16 | data[pos + 2] << 8 | data[pos + 3]

    def varint(self) -> int:
        value = 0
        for shift in (0, 7, 14, 21):
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise _malformed("variable byte integer longer than 4 bytes")

    def binary(self) -> bytes:
        size = self.u16()
        self.need(size)
        pos = self.pos
        self.pos = pos + size
        return bytes(self.data[pos : pos + size])

    def utf8(self) -> str:
        try:
            text = self.binary().decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("invalid UTF-8 string [MQTT-1.5.4-1]") from None
        if "\x00" in text:
            raise _malformed("UTF-8 string contains U+0000 [MQTT-1.5.4-2]")
        return text

    def rest(self) -> bytes:
        pos = self.pos
        self.pos = self.end
        return bytes(self.data[pos : self.end])

    def properties(self, packet_type: int) -> dict:
        size = self.varint()
        self.need(size)
        end = self.pos + size
        outer_end, self.end = self.end, end
        props: dict = {}
        while self.pos < end:
            prop = PROPERTY_BY_ID.get(self.varint())
            if prop is None or packet_type not in prop.packets:
                raise _malformed("property not valid for this packet [MQTT-2.2.2-1]")
            kind = prop.type
            if kind == PROP_BYTE:
                value = self.byte()
            elif kind == PROP_TWO_BYTE_INT:
                value = self.u16()
            elif kind == PROP_FOUR_BYTE_INT:
                value = self.u32()
            elif kind == PROP_VARINT:
                value = self.varint()
            elif kind == PROP_UTF8:
                value = self.utf8()
            elif kind == PROP_BINARY:
                value = self.binary()
            else:
                value = (self.utf8(), self.utf8())
            name = prop.name
            if name in BOOLEAN_PROPERTIES and value > 1:
                raise _protocol(f"{name} must be 0 or 1")
            if name in NONZERO_PROPERTIES and value == 0:
                raise _protocol(f"{name} must not be 0")
            if name in LIST_PROPERTIES:
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
        self.end = outer_end
        return props

    def packet_id(self) -> int:
        packet_id = self.u16()
        if packet_id == 0:
            raise _protocol("packet identifier 0 [MQTT-2.2.1-3]")
        return packet_id


def _check_topic_name(topic: str) -> None:
    if "+" in topic or "#" in topic:
        raise MQTTDecodeError("wildcard in a topic name [MQTT-3.3.2-2]", RC_TOPIC_NAME_INVALID)


def _decode_connect(r: _Reader, flags: int, level: int) -> Connect:
    name = r.utf8()
    level = r.byte()
    if level not in (3, 4, 5):
        raise MQTTDecodeError(f"unsupported protocol level {level}", RC_UNSUPPORTED_PROTOCOL_VERSION)
    if name != ("MQIsdp" if level == 3 else "MQTT"):
        raise _protocol(f"protocol name {name!r} for level {level} [MQTT-3.1.2-1]")
    v5 = level == 5
    cflags = r.byte()
    if cflags & 0x01:
        raise _malformed("CONNECT reserved flag set [MQTT-3.1.2-3]")
    will_flag = cflags & 0x04
    will_qos = (cflags >> 3) & 0x03
    will_retain = bool(cflags & 0x20)
    if will_qos == 3:
        raise _malformed("will QoS 3 [MQTT-3.1.2-14]")
    if not will_flag and (will_qos or will_retain):
        raise _malformed("will QoS or retain without will flag [MQTT-3.1.2-11]")
    if not v5 and cflags & 0x40 and not cflags & 0x80:
        raise _malformed("password flag without user name flag [MQTT-3.1.2-22]")
    keepalive = r.u16()
    props = r.properties(PKT_CONNECT) if v5 else {}
    client_id = r.utf8()
    will = None
    if will_flag:
        will_props = r.properties(PKT_WILL) if v5 else {}
        topic = r.utf8()
        _check_topic_name(topic)
        will = Will(topic, r.binary(), will_qos, will_retain, will_props)
    username = r.utf8() if cflags & 0x80 else None
    password = r.binary() if cflags & 0x40 else None
    return Connect(name, level, bool(cflags & 0x02), keepalive, client_id, will, username, password, props)


def _decode_connack(r: _Reader, flags: int, level: int) -> Connack:
    ack = r.byte()
    if ack & 0xFE:
        raise _malformed("CONNACK reserved flags set [MQTT-3.2.2-1]")
    code = r.byte()
    return Connack(bool(ack), code, r.properties(PKT_CONNACK) if level == 5 else {})


def _decode_publish(r: _Reader, flags: int, level: int) -> Publish:
    qos = (flags >> 1) & 0x03
    topic = r.utf8()
    _check_topic_name(topic)
    packet_id = r.packet_id() if qos else None
    props = r.properties(PKT_PUBLISH) if level == 5 else {}
    if not topic and "topic_alias" not in props:
        raise _protocol("empty topic name [MQTT-4.7.3-1]")
    return Publish(topic, r.rest(), qos, bool(flags & 0x01), bool(flags & 0x08), packet_id, props)


def _decode_ack(r: _Reader, flags: int, level: int, packet_type: int):
    packet_id = r.packet_id()
    code = 0
    props = {}
    if level == 5 and r.pos < r.end:
        code = r.byte()
        if r.pos < r.end:
            props = r.properties(packet_type)
    return _ACK_CLASSES[packet_type](packet_id, code, props)


def _decode_subscribe(r: _Reader, flags: int, level: int) -> Subscribe:
    packet_id = r.packet_id()
    v5 = level == 5
    props = r.properties(PKT_SUBSCRIBE) if v5 else {}
    topics = []
    while r.pos < r.end:
        topic = r.utf8()
        options = r.byte()
        if options & (0xC0 if v5 else 0xFC):
            raise _malformed("subscription options reserved bits set [MQTT-3.8.3-5]")
        qos = options & 0x03
        if qos == 3:
            raise _malformed("subscription QoS 3 [MQTT-3-8.3-4]")
        retain_handling = (options >> 4) & 0x03
        if retain_handling == 3:
            raise _protocol("retain handling 3")
        topics.append(
            (topic, SubscriptionOptions(qos, bool(options & 0x04), bool(options & 0x08), retain_handling))
        )
    if not topics:
        raise _protocol("SUBSCRIBE without topic filters [MQTT-3.8.3-3]")
    return Subscribe(packet_id, topics, props)


def _decode_suback(r: _Reader, flags: int, level: int) -> Suback:
    packet_id = r.packet_id()
    props = r.properties(PKT_SUBACK) if level == 5 else {}
    return Suback(packet_id, list(r.rest()), props)


def _decode_unsubscribe(r: _Reader, flags: int, level: int) -> Unsubscribe:
    packet_id = r.packet_id()
    props = r.properties(PKT_UNSUBSCRIBE) if level == 5 else {}
    topics = []
    while r.pos < r.end:
        topics.append(r.utf8())
    if not topics:
        raise _protocol("UNSUBSCRIBE without topic filters [MQTT-3.10.3-2]")
    return Unsubscribe(packet_id, topics, props)


def _decode_unsuback(r: _Reader, flags: int, level: int) -> Unsuback:
    packet_id = r.packet_id()
    if level != 5:
        return Unsuback(packet_id)
    props = r.properties(PKT_UNSUBACK)
    return Unsuback(packet_id, list(r.rest()), props)


def _decode_reason(r: _Reader, level: int, packet_type: int, cls):
    code = 0
    props = {}
    if level == 5 and r.pos < r.end:
        code = r.byte()
        if r.pos < r.end:
            props = r.properties(packet_type)
    return cls(code, props)


def decode(data, protocol_level: int, max_packet_size: int = MAX_PACKET_SIZE):
    """Decode one packet from the start of ``data``.

    Args:
        data: received bytes (``bytes``, ``bytearray`` or ``memoryview``), possibly
            holding a partial packet or several packets.
        protocol_level: 0 before CONNECT, else the level the CONNECT gave (3, 4 or 5).
        max_packet_size: largest whole packet accepted, fixed header included.

    Returns:
        ``(packet, consumed)``, or ``(None, 0)`` when ``data`` holds no whole packet yet.

    Raises:
        MQTTDecodeError: the bytes break the spec; ``reason_code`` says how.
        ValueError: ``protocol_level`` is not 0, 3, 4 or 5.
    """
    if protocol_level not in (0, 3, 4, 5):
        raise ValueError(f"protocol_level must be 0, 3, 4 or 5, not {protocol_level!r}")
    size = len(data)
    if size == 0:
        return None, 0
    first = data[0]
    packet_type = first >> 4
    flags = first & 0x0F
    if protocol_level == 0 and packet_type != PKT_CONNECT:
        raise _protocol("first packet is not CONNECT [MQTT-3.1.0-1]")
    if packet_type == 0 or (packet_type == PKT_AUTH and protocol_level != 5):
        raise _malformed(f"reserved packet type {packet_type}")
    if packet_type == PKT_PUBLISH:
        if flags & 0x06 == 0x06:
            raise _malformed("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
    elif flags != (0x02 if packet_type in (PKT_PUBREL, PKT_SUBSCRIBE, PKT_UNSUBSCRIBE) else 0):
        raise _malformed(f"reserved fixed header flags {flags:#06b} for packet type {packet_type} [MQTT-2.2.2-2]")
    remaining = 0
    pos = 1
    shift = 0
    while True:
        if pos == 5:
            raise _malformed("remaining length longer than 4 bytes")
        if pos >= size:
            return None, 0
        byte = data[pos]
        pos += 1
        remaining |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    total = pos + remaining
    if total > max_packet_size:
        raise MQTTDecodeError(f"packet of {total} bytes exceeds {max_packet_size}", RC_PACKET_TOO_LARGE)
    if size < total:
        return None, 0
    r = _Reader(data, pos, total)
    level = protocol_level
    if packet_type == PKT_CONNECT:
        packet = _decode_connect(r, flags, level)
    elif packet_type == PKT_PUBLISH:
        packet = _decode_publish(r, flags, level)
    elif packet_type <= PKT_PUBCOMP and packet_type >= PKT_PUBACK:
        packet = _decode_ack(r, flags, level, packet_type)
    elif packet_type == PKT_CONNACK:
        packet = _decode_connack(r, flags, level)
    elif packet_type == PKT_SUBSCRIBE:
        packet = _decode_subscribe(r, flags, level)
    elif packet_type == PKT_SUBACK:
        packet = _decode_suback(r, flags, level)
    elif packet_type == PKT_UNSUBSCRIBE:
        packet = _decode_unsubscribe(r, flags, level)
    elif packet_type == PKT_UNSUBACK:
        packet = _decode_unsuback(r, flags, level)
    elif packet_type == 12:
        packet = Pingreq()
    elif packet_type == 13:
        packet = Pingresp()
    elif packet_type == PKT_DISCONNECT:
        packet = _decode_reason(r, level, PKT_DISCONNECT, Disconnect)
    else:
        packet = _decode_reason(r, level, PKT_AUTH, Auth)
    if r.pos != total:
        raise _malformed("bytes left over inside the packet")
    return packet, total


# Encoding. The packet objects are trusted to be well-formed; out-of-range values
# raise ValueError (or OverflowError from int.to_bytes) rather than produce bad bytes.


def _w_varint(out: bytearray, value: int) -> None:
    if not 0 <= value <= MAX_PACKET_SIZE:
        raise ValueError(f"variable byte integer out of range: {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _w_binary(out: bytearray, value: bytes) -> None:
    if len(value) > 0xFFFF:
        raise ValueError("string or binary field longer than 65535 bytes")
    out += len(value).to_bytes(2, "big")
    out += value


def _w_utf8(out: bytearray, value: str) -> None:
    _w_binary(out, value.encode("utf-8"))


def _w_property(out: bytearray, ident: int, kind: int, value) -> None:
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


def _w_properties(out: bytearray, props: dict) -> None:
    if not props:
        out.append(0)
        return
    body = bytearray()
    for name, value in props.items():
        prop = PROPERTY_BY_NAME.get(name)
        if prop is None:
            raise ValueError(f"unknown MQTT property {name!r}")
        if name in LIST_PROPERTIES:
            for item in value:
                _w_property(body, prop.id, prop.type, item)
        else:
            _w_property(body, prop.id, prop.type, value)
    _w_varint(out, len(body))
    out += body


def _w_reason(out: bytearray, code: int, props: dict) -> None:
    # The short forms: reason code 0 and no properties may both be left out.
    if code or props:
        out.append(code)
        if props:
            _w_properties(out, props)


def encode(packet, protocol_level: int) -> bytes:
    """Encode one packet for a peer speaking ``protocol_level`` (3, 4 or 5).

    CONNECT uses its own ``protocol_level``. Properties and 5.0-only reason codes are
    left out below level 5.

    Raises:
        ValueError: a value that cannot be encoded, or AUTH below level 5.
        TypeError: not a packet.
    """
    v5 = protocol_level == 5
    body = bytearray()
    cls = type(packet)
    if cls is Publish:
        qos = packet.qos
        first = 0x30 | packet.dup << 3 | qos << 1 | packet.retain
        _w_utf8(body, packet.topic)
        if qos:
            body += packet.packet_id.to_bytes(2, "big")
        if v5:
            _w_properties(body, packet.properties)
        body += packet.payload
    elif cls is Puback or cls is Pubrec or cls is Pubrel or cls is Pubcomp:
        first = 0x62 if cls is Pubrel else (0x40 if cls is Puback else 0x50 if cls is Pubrec else 0x70)
        body += packet.packet_id.to_bytes(2, "big")
        if v5:
            _w_reason(body, packet.reason_code, packet.properties)
    elif cls is Connect:
        level = packet.protocol_level
        v5 = level == 5
        first = 0x10
        _w_utf8(body, packet.protocol_name)
        body.append(level)
        will = packet.will
        cflags = packet.clean_start << 1
        if will is not None:
            cflags |= 0x04 | will.qos << 3 | will.retain << 5
        if packet.password is not None:
            cflags |= 0x40
        if packet.username is not None:
            cflags |= 0x80
        body.append(cflags)
        body += packet.keepalive.to_bytes(2, "big")
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
    elif cls is Connack:
        first = 0x20
        body.append(1 if packet.session_present else 0)
        body.append(packet.reason_code)
        if v5:
            _w_properties(body, packet.properties)
    elif cls is Subscribe:
        first = 0x82
        body += packet.packet_id.to_bytes(2, "big")
        if v5:
            _w_properties(body, packet.properties)
        for topic, options in packet.topics:
            _w_utf8(body, topic)
            if v5:
                body.append(options.qos | options.no_local << 2 | options.retain_as_published << 3
                            | options.retain_handling << 4)  # fmt: skip
            else:
                body.append(options.qos)
    elif cls is Suback or cls is Unsuback:
        first = 0x90 if cls is Suback else 0xB0
        body += packet.packet_id.to_bytes(2, "big")
        if v5:
            _w_properties(body, packet.properties)
        if v5 or cls is Suback:
            body += bytes(packet.reason_codes)
    elif cls is Unsubscribe:
        first = 0xA2
        body += packet.packet_id.to_bytes(2, "big")
        if v5:
            _w_properties(body, packet.properties)
        for topic in packet.topics:
            _w_utf8(body, topic)
    elif cls is Pingreq:
        first = 0xC0
    elif cls is Pingresp:
        first = 0xD0
    elif cls is Disconnect:
        first = 0xE0
        if v5:
            _w_reason(body, packet.reason_code, packet.properties)
    elif cls is Auth:
        if not v5:
            raise ValueError("AUTH exists only in MQTT 5")
        first = 0xF0
        _w_reason(body, packet.reason_code, packet.properties)
    else:
        raise TypeError(f"not an MQTT packet: {packet!r}")
    out = bytearray((first,))
    _w_varint(out, len(body))
    out += body
    return bytes(out)
