"""The MQTT packet codec, run against both twins: round trips, spec vectors, every
decode error with its reason code, and the incremental ``(None, 0)`` protocol."""

from __future__ import annotations

import pytest

from pillion._testing import import_twin
from pillion.broker.packets import (
    MAX_PACKET_SIZE,
    PROPERTIES,
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

MALFORMED, PROTOCOL, UNSUPPORTED, TOPIC_INVALID, TOO_LARGE = 0x81, 0x82, 0x84, 0x90, 0x95


@pytest.fixture(params=("pure", "compiled"))
def codec(request):
    return import_twin("mqttcodec", request.param)


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def frame(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


USER = {"user_property": [("k", "v"), ("k", "v2"), ("é", "")]}

V311_PACKETS = [
    Connect(client_id="c1", keepalive=60),
    Connect(protocol_name="MQIsdp", protocol_level=3, client_id="old", clean_start=False),
    Connect(client_id="", clean_start=True, will=Will("w/t", b"bye", 2, True), username="u", password=b"\x00p"),
    Connect(client_id="x", username="only-user"),
    Connack(session_present=True, reason_code=0),
    Connack(reason_code=5),
    Publish("a/b", b"hello", 0),
    Publish("a/b", b"", 1, retain=True, packet_id=1),
    Publish("é/ü", bytes(range(256)), 2, dup=True, packet_id=65535),
    Puback(7), Pubrec(8), Pubrel(9), Pubcomp(10),
    Subscribe(1, [("a/+", SubscriptionOptions(0)), ("#", SubscriptionOptions(2))]),
    Suback(1, [0, 1, 2, 0x80]),
    Unsubscribe(2, ["a/+", "b"]),
    Unsuback(2),
    Pingreq(), Pingresp(), Disconnect(),
]  # fmt: skip

V5_PACKETS = [
    Connect(protocol_level=5, client_id="c5", keepalive=30,
            properties={"session_expiry_interval": 3600, "receive_maximum": 20, "maximum_packet_size": 1024,
                        "topic_alias_maximum": 10, "request_problem_information": 1,
                        "request_response_information": 0, "authentication_method": "SCRAM",
                        "authentication_data": b"\x01\x02", **USER}),
    Connect(protocol_level=5, client_id="c", clean_start=False, password=b"no-user",
            will=Will("w", b"x", 1, False, {"will_delay_interval": 5, "payload_format_indicator": 1,
                                            "message_expiry_interval": 9, "content_type": "text/plain",
                                            "response_topic": "r", "correlation_data": b"id", **USER})),
    Connack(True, 0, {"session_expiry_interval": 0, "receive_maximum": 1, "maximum_qos": 1,
                      "retain_available": 0, "maximum_packet_size": 99, "assigned_client_identifier": "auto-1",
                      "topic_alias_maximum": 0, "reason_string": "ok", "wildcard_subscription_available": 1,
                      "subscription_identifier_available": 1, "shared_subscription_available": 0,
                      "server_keep_alive": 10, "response_information": "ri", "server_reference": "other",
                      "authentication_method": "m", "authentication_data": b"", **USER}),
    Connack(False, 0x87),
    Publish("t", b"p" * 300, 1, packet_id=3,
            properties={"payload_format_indicator": 0, "message_expiry_interval": 2**32 - 1, "topic_alias": 4,
                        "response_topic": "resp", "correlation_data": b"\xff", "subscription_identifier": [1, 268435455],
                        "content_type": "c", **USER}),
    Publish("", b"aliased", 0, properties={"topic_alias": 1}),
    Puback(1), Puback(1, 0x10), Puback(2, 0, {"reason_string": "fine"}),
    Pubrec(3, 0x80, USER), Pubrel(4, 0x92), Pubcomp(5, 0, {"reason_string": "r", **USER}),
    Subscribe(6, [("a/#", SubscriptionOptions(1, True, True, 2)), ("$share/g/x", SubscriptionOptions(2, False, False, 1))],
              {"subscription_identifier": [42], **USER}),
    Suback(6, [1, 0x87], {"reason_string": "partly"}),
    Unsubscribe(7, ["a/#"], USER),
    Unsuback(7, [0, 0x11], {"reason_string": "x"}),
    Unsuback(8, []),
    Pingreq(), Pingresp(),
    Disconnect(), Disconnect(0x04), Disconnect(0x8E, {"session_expiry_interval": 1, "reason_string": "bye",
                                                    "server_reference": "s", **USER}),
    Auth(), Auth(0x18, {"authentication_method": "m", "authentication_data": b"d", "reason_string": "go"}),
]  # fmt: skip


def cases():
    for packet in V311_PACKETS:
        yield pytest.param(4, packet, id=f"311-{type(packet).__name__}")
    for packet in V5_PACKETS:
        yield pytest.param(5, packet, id=f"5-{type(packet).__name__}")


@pytest.mark.parametrize(("level", "packet"), cases())
def test_round_trip(codec, level, packet):
    data = codec.encode(packet, level)
    decode_level = 0 if isinstance(packet, Connect) else level
    assert codec.decode(data, decode_level) == (packet, len(data))
    assert codec.decode(bytearray(data) + b"\xc0\x00", decode_level) == (packet, len(data))
    assert codec.decode(memoryview(data), decode_level) == (packet, len(data))
    assert codec.encode(packet, level) == data


def test_property_table_has_every_mqtt5_property():
    assert len(PROPERTIES) == 27
    assert len({p.id for p in PROPERTIES}) == len({p.name for p in PROPERTIES}) == 27


def test_public_names(codec):
    assert codec.__all__ == ["decode", "encode", "MQTTDecodeError"]
    assert codec.MQTTDecodeError is MQTTDecodeError
    assert issubclass(MQTTDecodeError, ValueError)


# Known byte vectors.

PAHO_311_CONNECT = b"\x10\x17\x00\x04MQTT\x04\x02\x00\x3c\x00\x0bpaho-client"


def test_paho_default_connect(codec):
    packet, used = codec.decode(PAHO_311_CONNECT, 0)
    assert used == len(PAHO_311_CONNECT)
    assert packet == Connect("MQTT", 4, True, 60, "paho-client", None, None, None, {})
    assert codec.encode(packet, 0) == PAHO_311_CONNECT


@pytest.mark.parametrize(
    ("level", "data", "packet"),
    [
        (4, b"\x32\x09\x00\x03a/b\x00\x0ahi", Publish("a/b", b"hi", 1, packet_id=10)),
        (5, b"\x32\x0a\x00\x03a/b\x00\x0a\x00hi", Publish("a/b", b"hi", 1, packet_id=10)),
        (4, b"\x20\x02\x01\x00", Connack(True, 0)),
        (5, b"\x20\x03\x00\x00\x00", Connack(False, 0)),
        (4, b"\x40\x02\x00\x01", Puback(1)),
        (5, b"\x40\x02\x00\x01", Puback(1)),
        (5, b"\x40\x03\x00\x01\x10", Puback(1, 0x10)),
        (5, b"\x62\x04\x00\x01\x92\x00", Pubrel(1, 0x92)),
        (4, b"\x82\x08\x00\x01\x00\x03a/b\x01", Subscribe(1, [("a/b", SubscriptionOptions(1))])),
        (5, b"\x82\x09\x00\x01\x02\x0b\x05\x00\x01#\x2d",
         Subscribe(1, [("#", SubscriptionOptions(1, True, True, 2))], {"subscription_identifier": [5]})),
        (4, b"\x90\x03\x00\x01\x80", Suback(1, [0x80])),
        (4, b"\xb0\x02\x00\x01", Unsuback(1)),
        (4, b"\xc0\x00", Pingreq()),
        (4, b"\xd0\x00", Pingresp()),
        (4, b"\xe0\x00", Disconnect()),
        (5, b"\xe0\x00", Disconnect()),
        (5, b"\xe0\x01\x8e", Disconnect(0x8E)),
        (5, b"\xf0\x00", Auth()),
        (5, b"\x30\x0d\x00\x00\x03\x23\x00\x07payload", Publish("", b"payload", 0, properties={"topic_alias": 7})),
    ],
)  # fmt: skip
def test_known_vectors(codec, level, data, packet):
    assert codec.decode(data, level) == (packet, len(data))


def test_mqtt5_connect_vector(codec):
    body = (s("MQTT") + b"\x05\xc2\x00\x0a" + b"\x05\x11\x00\x00\x00\x3c" + s("cid") + s("user") + s(b"pw"))
    packet, used = codec.decode(frame(0x10, body), 0)
    assert packet == Connect("MQTT", 5, True, 10, "cid", None, "user", b"pw", {"session_expiry_interval": 60})
    assert codec.encode(packet, 5) == frame(0x10, body)


# Decode errors.

C311 = s("MQTT") + b"\x04"
C5 = s("MQTT") + b"\x05"

ERRORS = [
    # (level, data, reason_code, id)
    (4, b"\x30\xff\xff\xff\xff\x01", MALFORMED, "remaining-length-5-bytes"),
    (4, b"\x30\x80\x80\x80\x80", MALFORMED, "remaining-length-5th-byte-pending"),
    (4, b"\x00\x00", MALFORMED, "type-0"),
    (5, b"\x00\x00", MALFORMED, "type-0-v5"),
    (4, b"\xf0\x00", MALFORMED, "type-15-in-311"),
    (4, b"\x80\x05\x00\x01\x00\x01a", MALFORMED, "subscribe-flags-0"),
    (4, b"\xa0\x05\x00\x01\x00\x01a", MALFORMED, "unsubscribe-flags-0"),
    (4, b"\x60\x02\x00\x01", MALFORMED, "pubrel-flags-0"),
    (4, b"\x41\x02\x00\x01", MALFORMED, "puback-flags-1"),
    (4, b"\xc1\x00", MALFORMED, "pingreq-flags"),
    (4, b"\x36\x05\x00\x01a\x00\x01", MALFORMED, "publish-qos-3"),
    (4, b"\x32\x05\x00\x01a\x00\x00", PROTOCOL, "publish-packet-id-0"),
    (4, b"\x40\x02\x00\x00", PROTOCOL, "puback-packet-id-0"),
    (5, b"\x50\x02\x00\x00", PROTOCOL, "pubrec-packet-id-0"),
    (4, b"\x82\x06\x00\x00\x00\x01a\x00", PROTOCOL, "subscribe-packet-id-0"),
    (4, b"\xa2\x05\x00\x00\x00\x01a", PROTOCOL, "unsubscribe-packet-id-0"),
    (4, b"\x30\x04\x00\x02\xc3\x28", MALFORMED, "invalid-utf8"),
    (4, b"\x30\x05\x00\x03\xed\xa0\x80", MALFORMED, "utf8-surrogate"),
    (4, b"\x30\x04\x00\x02a\x00", MALFORMED, "utf8-nul"),
    (4, b"\x30\x05\x00\x03a/+", TOPIC_INVALID, "publish-wildcard-plus"),
    (5, b"\x30\x06\x00\x03a/#\x00", TOPIC_INVALID, "publish-wildcard-hash"),
    (4, b"\x30\x02\x00\x00", PROTOCOL, "publish-empty-topic-311"),
    (5, b"\x30\x03\x00\x00\x00", PROTOCOL, "publish-empty-topic-no-alias"),
    (4, b"\x82\x02\x00\x01", PROTOCOL, "subscribe-empty"),
    (5, b"\x82\x03\x00\x01\x00", PROTOCOL, "subscribe-empty-v5"),
    (4, b"\xa2\x02\x00\x01", PROTOCOL, "unsubscribe-empty"),
    (4, b"\x82\x06\x00\x01\x00\x01a\x04", MALFORMED, "subscribe-311-reserved-option-bits"),
    (5, b"\x82\x07\x00\x01\x00\x00\x01a\x40", MALFORMED, "subscribe-5-reserved-option-bits"),
    (4, b"\x82\x06\x00\x01\x00\x01a\x03", MALFORMED, "subscribe-qos-3"),
    (5, b"\x82\x07\x00\x01\x00\x00\x01a\x30", PROTOCOL, "subscribe-retain-handling-3"),
    (0, frame(0x10, C311 + b"\x03\x00\x00" + s("c")), MALFORMED, "connect-reserved-flag"),
    (0, frame(0x10, C311 + b"\x08\x00\x00" + s("c")), MALFORMED, "connect-will-qos-without-will"),
    (0, frame(0x10, C311 + b"\x20\x00\x00" + s("c")), MALFORMED, "connect-will-retain-without-will"),
    (0, frame(0x10, C311 + b"\x1c\x00\x00" + s("c") + s("t") + s("p")), MALFORMED, "connect-will-qos-3"),
    (0, frame(0x10, C311 + b"\x40\x00\x00" + s("c") + s("pw")), MALFORMED, "connect-311-password-without-user"),
    (0, frame(0x10, C311 + b"\x04\x00\x00" + s("c") + s("t/#") + s("p")), TOPIC_INVALID, "connect-will-wildcard"),
    (0, frame(0x10, s("MQTT") + b"\x06\x00\x00\x00" + s("c")), UNSUPPORTED, "connect-level-6"),
    (0, frame(0x10, s("MQTT") + b"\x02\x00\x00\x00" + s("c")), UNSUPPORTED, "connect-level-2"),
    (0, frame(0x10, s("MQTX") + b"\x04\x00\x00\x00" + s("c")), PROTOCOL, "connect-bad-protocol-name"),
    (0, frame(0x10, s("MQTT") + b"\x03\x00\x00\x00" + s("c")), PROTOCOL, "connect-level-3-name-mqtt"),
    (0, b"\x30\x02\x00\x01", PROTOCOL, "first-packet-publish"),
    (0, b"\xc0\x00", PROTOCOL, "first-packet-pingreq"),
    (0, b"\x20", PROTOCOL, "first-packet-checked-from-first-byte"),
    (0, frame(0x10, C311 + b"\x02\x00\x00" + s("c") + b"x"), MALFORMED, "connect-trailing-byte"),
    (0, frame(0x10, C311 + b"\x02\x00\x00" + s("c")[:-1]), MALFORMED, "connect-truncated-inside"),
    (4, b"\xc0\x01\x00", MALFORMED, "pingreq-trailing"),
    (4, b"\xe0\x01\x00", MALFORMED, "disconnect-311-trailing"),
    (4, b"\x40\x03\x00\x01\x00", MALFORMED, "puback-311-trailing"),
    (4, b"\x20\x02\x02\x00", MALFORMED, "connack-reserved-flags"),
    (4, b"\x30\x02\x00\x05", MALFORMED, "string-longer-than-packet"),
    (5, b"\x40\x04\x00\x01\x00\x05", MALFORMED, "property-length-past-end"),
    (5, b"\x40\x05\x00\x01\x00\x01\x7f", MALFORMED, "unknown-property"),
    (5, b"\x40\x06\x00\x01\x00\x02\x23\x00", MALFORMED, "property-not-for-packet"),
    (5, b"\x40\x06\x00\x01\x00\x02\x1f\x00", MALFORMED, "property-value-truncated"),
    (5, frame(0x40, b"\x00\x01\x00\x08" + b"\x1f" + s("a") + b"\x1f" + s("b")), PROTOCOL, "duplicate-reason-string"),
    (5, frame(0x30, s("t") + b"\x06\x23\x00\x01\x23\x00\x02"), PROTOCOL, "duplicate-topic-alias"),
    (5, frame(0x82, b"\x00\x01\x04\x0b\x01\x0b\x02" + s("a") + b"\x00"), PROTOCOL, "subscribe-two-sub-ids"),
    (5, frame(0x82, b"\x00\x01\x02\x0b\x00" + s("a") + b"\x00"), PROTOCOL, "subscription-identifier-0"),
    (5, frame(0x30, s("t") + b"\x02\x01\x02"), PROTOCOL, "payload-format-indicator-2"),
    (5, frame(0x30, s("t") + b"\x03\x23\x00\x00"), PROTOCOL, "topic-alias-0"),
    (5, frame(0x30, s("t") + b"\x05\x0b\x80\x80\x80\x80"), MALFORMED, "property-varint-5-bytes"),
    (0, frame(0x10, C5 + b"\x02\x00\x00" + b"\x03\x21\x00\x00" + s("c")), PROTOCOL, "receive-maximum-0"),
    (0, frame(0x10, C5 + b"\x02\x00\x00" + b"\x05\x27\x00\x00\x00\x00" + s("c")), PROTOCOL, "maximum-packet-size-0"),
    (0, frame(0x10, C5 + b"\x02\x00\x00" + b"\x02\x17\x02" + s("c")), PROTOCOL, "request-problem-information-2"),
    (0, frame(0x10, C5 + b"\x06\x00\x00\x00" + s("c") + b"\x02\x11\x00" + s("t") + s("p")), MALFORMED,
     "will-property-not-allowed"),
    (0, frame(0x10, C5 + b"\x02\x00\x00" + b"\x02\x18\x00" + s("c")), MALFORMED, "will-delay-in-connect"),
]  # fmt: skip


@pytest.mark.parametrize(("level", "data", "reason_code"), [pytest.param(*e[:3], id=e[3]) for e in ERRORS])
def test_decode_errors(codec, level, data, reason_code):
    with pytest.raises(MQTTDecodeError) as info:
        codec.decode(data, level)
    assert info.value.reason_code == reason_code


def test_mqtt5_password_without_username_is_fine(codec):
    data = frame(0x10, C5 + b"\x42\x00\x00\x00" + s("c") + s("pw"))
    assert codec.decode(data, 0)[0].password == b"pw"


def test_bad_protocol_level_argument(codec):
    with pytest.raises(ValueError) as info:
        codec.decode(b"\xc0\x00", 6)
    assert not isinstance(info.value, MQTTDecodeError)


def test_connect_sets_its_own_level(codec):
    data = codec.encode(Connect(protocol_level=5, client_id="a", properties={"receive_maximum": 3}), 0)
    for level in (0, 4, 5):
        assert codec.decode(data, level)[0].properties == {"receive_maximum": 3}


def test_auth_is_mqtt5_only(codec):
    with pytest.raises(ValueError):
        codec.encode(Auth(), 4)


def test_311_encoding_drops_properties_and_reason_codes(codec):
    assert codec.encode(Puback(1, 0x10, {"reason_string": "x"}), 4) == b"\x40\x02\x00\x01"
    assert codec.encode(Disconnect(0x8E), 4) == b"\xe0\x00"
    assert codec.encode(Unsuback(1, [0]), 4) == b"\xb0\x02\x00\x01"


def test_encode_rejects_non_packets_and_bad_values(codec):
    with pytest.raises(TypeError):
        codec.encode(object(), 4)
    with pytest.raises(ValueError):
        codec.encode(Publish("a" * 70000), 4)
    with pytest.raises(ValueError):
        codec.encode(Publish("a", properties={"no_such_property": 1}), 5)


# Size limit: checked from the fixed header alone, crossed by one byte.


def test_oversized_packet_rejected_from_header_alone(codec):
    header = b"\x30\xff\xff\x03"  # remaining length 65535, no body yet
    with pytest.raises(MQTTDecodeError) as info:
        codec.decode(header, 4, max_packet_size=65538)
    assert info.value.reason_code == TOO_LARGE
    assert codec.decode(header, 4, max_packet_size=65539) == (None, 0)


def test_max_packet_size_boundary(codec):
    data = codec.encode(Publish("t", b"x" * 100, 1, packet_id=1), 4)
    assert codec.decode(data, 4, max_packet_size=len(data)) == (codec.decode(data, 4)[0], len(data))
    with pytest.raises(MQTTDecodeError) as info:
        codec.decode(data, 4, max_packet_size=len(data) - 1)
    assert info.value.reason_code == TOO_LARGE


def test_default_max_packet_size():
    assert MAX_PACKET_SIZE == 268435455


# Incremental decoding: whole, split at every offset, byte by byte.

STREAM_311 = [Connect(client_id="s", keepalive=5)] + V311_PACKETS[4:]
STREAM_5 = [V5_PACKETS[0]] + V5_PACKETS[2:]


def encode_stream(codec, packets):
    level = packets[0].protocol_level
    return b"".join(codec.encode(p, level) for p in packets)


def feed(codec, chunks):
    """Decode a stream the way the broker will: append, decode until (None, 0), keep the rest."""
    buffer = bytearray()
    level = 0
    out = []
    for chunk in chunks:
        buffer += chunk
        while True:
            packet, used = codec.decode(buffer, level)
            if packet is None:
                assert used == 0
                break
            assert used > 0
            if isinstance(packet, Connect):
                level = packet.protocol_level
            out.append(packet)
            del buffer[:used]
    assert not buffer
    return out


@pytest.mark.parametrize("packets", [STREAM_311, STREAM_5], ids=["311", "5"])
def test_stream_whole(codec, packets):
    assert feed(codec, [encode_stream(codec, packets)]) == packets


@pytest.mark.parametrize("packets", [STREAM_311, STREAM_5], ids=["311", "5"])
def test_stream_split_at_every_offset(codec, packets):
    data = encode_stream(codec, packets)
    for offset in range(len(data) + 1):
        assert feed(codec, [data[:offset], data[offset:]]) == packets


@pytest.mark.parametrize("packets", [STREAM_311, STREAM_5], ids=["311", "5"])
def test_stream_byte_by_byte(codec, packets):
    data = encode_stream(codec, packets)
    assert feed(codec, [data[i : i + 1] for i in range(len(data))]) == packets


@pytest.mark.parametrize(("level", "packet"), cases())
def test_every_prefix_needs_more(codec, level, packet):
    data = codec.encode(packet, level)
    decode_level = 0 if isinstance(packet, Connect) else level
    for end in range(len(data)):
        assert codec.decode(data[:end], decode_level) == (None, 0)


def test_large_remaining_length(codec):
    packet = Publish("big", b"z" * 2_100_000, 0)
    data = codec.encode(packet, 4)
    assert data[1:5] == varint(len(data) - 5) and len(varint(len(data) - 5)) == 4
    assert codec.decode(data, 4) == (packet, len(data))
    assert codec.decode(data[:5], 4) == (None, 0)
