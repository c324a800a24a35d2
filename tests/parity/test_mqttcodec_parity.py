"""The compiled MQTT codec and its pure twin: same names, same packets, same reason codes."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pillion._testing import import_twin
from pillion.broker import packets as P

PURE = import_twin("mqttcodec", "pure")  # the specification, always importable; encodes the inputs
settings_ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def twins():
    return import_twin("mqttcodec", "pure"), import_twin("mqttcodec", "compiled")


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)
topic_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#"), min_size=1, max_size=8
)
topic_filters = st.one_of(topic_names, st.sampled_from(["#", "+", "a/+/b", "a/#", "$share/g/a"]))
u16 = st.integers(0, 0xFFFF)
packet_ids = st.integers(1, 0xFFFF)
reason_codes = st.integers(0, 255)

_VALUE = {
    P.PROP_BYTE: st.integers(0, 255),
    P.PROP_TWO_BYTE_INT: u16,
    P.PROP_FOUR_BYTE_INT: st.integers(0, 2**32 - 1),
    P.PROP_VARINT: st.integers(0, P.MAX_PACKET_SIZE),
    P.PROP_UTF8: text,
    P.PROP_BINARY: st.binary(max_size=8),
    P.PROP_UTF8_PAIR: st.tuples(text, text),
}


def _value(prop):
    strategy = _VALUE[prop.type]
    if prop.name in P.BOOLEAN_PROPERTIES:
        strategy = st.integers(0, 1)
    if prop.name in P.NONZERO_PROPERTIES:
        strategy = st.integers(1, {P.PROP_TWO_BYTE_INT: 0xFFFF, P.PROP_FOUR_BYTE_INT: 2**32 - 1,
                                   P.PROP_VARINT: P.MAX_PACKET_SIZE}[prop.type])  # fmt: skip
    return strategy


@st.composite
def properties(draw, packet_type: int, v5: bool):
    if not v5:
        return {}
    allowed = [p for p in P.PROPERTIES if packet_type in p.packets]
    chosen = draw(st.lists(st.sampled_from(allowed), unique=True, max_size=4))
    props = {}
    for prop in chosen:
        if prop.name in P.LIST_PROPERTIES:
            repeat = prop.name == "user_property" or packet_type == P.PKT_PUBLISH
            props[prop.name] = draw(st.lists(_value(prop), min_size=1, max_size=3 if repeat else 1))
        else:
            props[prop.name] = draw(_value(prop))
    return props


@st.composite
def packets(draw, level: int):
    v5 = level == 5
    kind = draw(st.integers(1, 15 if v5 else 14))
    if kind == P.PKT_CONNECT:
        will = None
        if draw(st.booleans()):
            will = P.Will(draw(topic_names), draw(st.binary(max_size=20)), draw(st.integers(0, 2)),
                          draw(st.booleans()), draw(properties(P.PKT_WILL, v5)))  # fmt: skip
        username = draw(st.none() | text)
        password = draw(st.none() | st.binary(max_size=8)) if (v5 or username is not None) else None
        return P.Connect("MQIsdp" if level == 3 else "MQTT", level, draw(st.booleans()), draw(u16), draw(text),
                         will, username, password, draw(properties(P.PKT_CONNECT, v5)))  # fmt: skip
    if kind == P.PKT_CONNACK:
        return P.Connack(draw(st.booleans()), draw(reason_codes), draw(properties(P.PKT_CONNACK, v5)))
    if kind == P.PKT_PUBLISH:
        qos = draw(st.integers(0, 2))
        props = draw(properties(P.PKT_PUBLISH, v5))
        topic = draw(topic_names | st.just("")) if "topic_alias" in props else draw(topic_names)
        return P.Publish(topic, draw(st.binary(max_size=300)), qos, draw(st.booleans()), draw(st.booleans()),
                         draw(packet_ids) if qos else None, props)  # fmt: skip
    if P.PKT_PUBACK <= kind <= P.PKT_PUBCOMP:
        cls = {4: P.Puback, 5: P.Pubrec, 6: P.Pubrel, 7: P.Pubcomp}[kind]
        return cls(draw(packet_ids), draw(reason_codes) if v5 else 0, draw(properties(kind, v5)))
    if kind == P.PKT_SUBSCRIBE:
        options = st.builds(P.SubscriptionOptions, st.integers(0, 2), st.booleans(), st.booleans(),
                            st.integers(0, 2)) if v5 else st.builds(P.SubscriptionOptions, st.integers(0, 2))  # fmt: skip
        topics = draw(st.lists(st.tuples(topic_filters, options), min_size=1, max_size=4))
        return P.Subscribe(draw(packet_ids), topics, draw(properties(kind, v5)))
    if kind == P.PKT_SUBACK:
        return P.Suback(draw(packet_ids), draw(st.lists(reason_codes, max_size=4)), draw(properties(kind, v5)))
    if kind == P.PKT_UNSUBSCRIBE:
        return P.Unsubscribe(draw(packet_ids), draw(st.lists(topic_filters, min_size=1, max_size=4)),
                             draw(properties(kind, v5)))  # fmt: skip
    if kind == P.PKT_UNSUBACK:
        codes = draw(st.lists(reason_codes, max_size=4)) if v5 else []
        return P.Unsuback(draw(packet_ids), codes, draw(properties(kind, v5)))
    if kind == P.PKT_PINGREQ:
        return P.Pingreq()
    if kind == P.PKT_PINGRESP:
        return P.Pingresp()
    cls = P.Disconnect if kind == P.PKT_DISCONNECT else P.Auth
    return cls(draw(reason_codes) if v5 else 0, draw(properties(kind, v5)))


levels = st.sampled_from((3, 4, 5))


def outcome(module, data, level, max_packet_size=P.MAX_PACKET_SIZE):
    try:
        return module.decode(data, level, max_packet_size)
    except P.MQTTDecodeError as exc:
        return ("error", exc.reason_code)


def test_same_public_names(twins):
    pure, compiled = twins
    assert pure.__all__ == compiled.__all__ == ["decode", "encode", "MQTTDecodeError"]
    assert pure.MQTTDecodeError is compiled.MQTTDecodeError is P.MQTTDecodeError


def test_same_signatures(twins):
    pure, compiled = twins
    for name in ("decode", "encode"):
        assert [p.name for p in inspect.signature(getattr(pure, name)).parameters.values()] == [
            p.name for p in inspect.signature(getattr(compiled, name)).parameters.values()
        ]
    assert compiled.decode(data=b"", protocol_level=0, max_packet_size=10) == (None, 0)


@settings_
@given(data=st.data(), level=levels)
def test_round_trip_through_both(twins, data, level):
    pure, compiled = twins
    packet = data.draw(packets(level))
    event(type(packet).__name__)
    wire = pure.encode(packet, level)
    assert compiled.encode(packet, level) == wire
    decode_level = 0 if isinstance(packet, P.Connect) else level
    assert pure.decode(wire, decode_level) == (packet, len(wire))
    assert compiled.decode(wire, decode_level) == (packet, len(wire))


@st.composite
def mutated(draw):
    level = draw(levels)
    wire = bytearray(PURE.encode(draw(packets(level)), level))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "set", "insert", "delete", "truncate", "append")))
        at = draw(st.integers(0, max(len(wire) - 1, 0)))
        if op == "flip" and wire:
            wire[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and wire:
            wire[at] = draw(st.integers(0, 255))
        elif op == "insert":
            wire.insert(at, draw(st.integers(0, 255)))
        elif op == "delete" and wire:
            del wire[at]
        elif op == "truncate":
            del wire[at:]
        elif op == "append":
            wire += draw(st.binary(max_size=4))
    return bytes(wire), draw(st.sampled_from((0, 3, 4, 5, level)))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated(), max_packet_size=st.sampled_from((P.MAX_PACKET_SIZE, 16, 64)))
def test_same_outcome_on_mutated_bytes(twins, case, max_packet_size):
    pure, compiled = twins
    data, level = case
    result = outcome(pure, data, level, max_packet_size)
    assert result == outcome(compiled, data, level, max_packet_size)
    event("error %#x" % result[1] if result[0] == "error" else "need more" if result[0] is None else "packet")


@settings(max_examples=1000, deadline=None)
@given(data=st.binary(max_size=40), level=st.sampled_from((0, 3, 4, 5)))
def test_same_outcome_on_random_bytes(twins, data, level):
    pure, compiled = twins
    assert outcome(pure, data, level) == outcome(compiled, data, level)


@settings(max_examples=500, deadline=None)
@given(first=st.integers(0, 255), body=st.binary(max_size=30), level=st.sampled_from((0, 3, 4, 5)))
def test_same_outcome_on_random_bodies(twins, first, body, level):
    pure, compiled = twins
    data = bytes([first, len(body)]) + body if len(body) < 128 else bytes([first]) + body
    assert outcome(pure, data, level) == outcome(compiled, data, level)
