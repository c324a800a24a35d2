"""MQTT control packets (3.1.1 and 5.0) as plain data, plus the MQTT 5 property table.

Owns the packet shapes, the constants both codec twins share and ``MQTTDecodeError``.
Knows nothing about bytes on the wire (``pillion._pure.mqttcodec`` and its compiled
twin do) nor about sessions.

Version notes: 3.1.1 packets carry no properties (``properties`` stays ``{}``) and no
reason codes on PUBACK/PUBREC/PUBREL/PUBCOMP/UNSUBACK/DISCONNECT (``reason_code`` 0,
``reason_codes`` empty). ``Connack.reason_code`` is the 3.1.1 *return code* (0-5) or
the 5.0 *reason code*; ``Suback.reason_codes`` likewise. Properties are a dict from
the property name in ``PROPERTIES`` to its value; ``user_property`` maps to a list of
``(key, value)`` pairs and ``subscription_identifier`` to a list of ints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

# Packet types (fixed header, high nibble). PKT_WILL is not a packet: it names the
# CONNECT will properties in the property table.
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

QOS_AT_MOST_ONCE = 0
QOS_AT_LEAST_ONCE = 1
QOS_EXACTLY_ONCE = 2

# Reason codes a decode error carries (MQTT 5 §2.4). For a 3.1.1 peer the broker maps
# them itself: RC_UNSUPPORTED_PROTOCOL_VERSION becomes CONNACK return code 1, the
# rest close the connection.
RC_MALFORMED_PACKET = 0x81
RC_PROTOCOL_ERROR = 0x82
RC_UNSUPPORTED_PROTOCOL_VERSION = 0x84
RC_TOPIC_NAME_INVALID = 0x90
RC_PACKET_TOO_LARGE = 0x95

MAX_PACKET_SIZE = 268435455  # largest Remaining Length a 4-byte varint can carry

# Property value types (MQTT 5 §1.5).
PROP_BYTE = 1
PROP_TWO_BYTE_INT = 2
PROP_FOUR_BYTE_INT = 3
PROP_VARINT = 4
PROP_UTF8 = 5
PROP_BINARY = 6
PROP_UTF8_PAIR = 7


class MQTTDecodeError(ValueError):
    """The bytes are not a valid packet; ``reason_code`` is what the peer should be told.

    Shared by both codec twins, so ``except MQTTDecodeError`` catches either.
    """

    def __init__(self, message: str, reason_code: int = RC_MALFORMED_PACKET) -> None:
        super().__init__(message)
        self.reason_code = reason_code

    def __reduce__(self):
        return type(self), (self.args[0], self.reason_code)


class Property(NamedTuple):
    id: int
    name: str
    type: int
    packets: frozenset[int]


_PUBLISH_WILL = frozenset({PKT_PUBLISH, PKT_WILL})
_ACKS = frozenset({PKT_CONNACK, PKT_PUBACK, PKT_PUBREC, PKT_PUBREL, PKT_PUBCOMP, PKT_SUBACK,
                   PKT_UNSUBACK, PKT_DISCONNECT, PKT_AUTH})  # fmt: skip

# MQTT 5 §2.2.2.2, table 2-4: identifier, name, type, packets that may carry it.
PROPERTIES: tuple[Property, ...] = (
    Property(0x01, "payload_format_indicator", PROP_BYTE, _PUBLISH_WILL),
    Property(0x02, "message_expiry_interval", PROP_FOUR_BYTE_INT, _PUBLISH_WILL),
    Property(0x03, "content_type", PROP_UTF8, _PUBLISH_WILL),
    Property(0x08, "response_topic", PROP_UTF8, _PUBLISH_WILL),
    Property(0x09, "correlation_data", PROP_BINARY, _PUBLISH_WILL),
    Property(0x0B, "subscription_identifier", PROP_VARINT, frozenset({PKT_PUBLISH, PKT_SUBSCRIBE})),
    Property(0x11, "session_expiry_interval", PROP_FOUR_BYTE_INT,
             frozenset({PKT_CONNECT, PKT_CONNACK, PKT_DISCONNECT})),
    Property(0x12, "assigned_client_identifier", PROP_UTF8, frozenset({PKT_CONNACK})),
    Property(0x13, "server_keep_alive", PROP_TWO_BYTE_INT, frozenset({PKT_CONNACK})),
    Property(0x15, "authentication_method", PROP_UTF8, frozenset({PKT_CONNECT, PKT_CONNACK, PKT_AUTH})),
    Property(0x16, "authentication_data", PROP_BINARY, frozenset({PKT_CONNECT, PKT_CONNACK, PKT_AUTH})),
    Property(0x17, "request_problem_information", PROP_BYTE, frozenset({PKT_CONNECT})),
    Property(0x18, "will_delay_interval", PROP_FOUR_BYTE_INT, frozenset({PKT_WILL})),
    Property(0x19, "request_response_information", PROP_BYTE, frozenset({PKT_CONNECT})),
    Property(0x1A, "response_information", PROP_UTF8, frozenset({PKT_CONNACK})),
    Property(0x1C, "server_reference", PROP_UTF8, frozenset({PKT_CONNACK, PKT_DISCONNECT})),
    Property(0x1F, "reason_string", PROP_UTF8, _ACKS),
    Property(0x21, "receive_maximum", PROP_TWO_BYTE_INT, frozenset({PKT_CONNECT, PKT_CONNACK})),
    Property(0x22, "topic_alias_maximum", PROP_TWO_BYTE_INT, frozenset({PKT_CONNECT, PKT_CONNACK})),
    Property(0x23, "topic_alias", PROP_TWO_BYTE_INT, frozenset({PKT_PUBLISH})),
    Property(0x24, "maximum_qos", PROP_BYTE, frozenset({PKT_CONNACK})),
    Property(0x25, "retain_available", PROP_BYTE, frozenset({PKT_CONNACK})),
    Property(0x26, "user_property", PROP_UTF8_PAIR, frozenset(range(16))),
    Property(0x27, "maximum_packet_size", PROP_FOUR_BYTE_INT, frozenset({PKT_CONNECT, PKT_CONNACK})),
    Property(0x28, "wildcard_subscription_available", PROP_BYTE, frozenset({PKT_CONNACK})),
    Property(0x29, "subscription_identifier_available", PROP_BYTE, frozenset({PKT_CONNACK})),
    Property(0x2A, "shared_subscription_available", PROP_BYTE, frozenset({PKT_CONNACK})),
)  # fmt: skip
PROPERTY_BY_ID: dict[int, Property] = {p.id: p for p in PROPERTIES}
PROPERTY_BY_NAME: dict[str, Property] = {p.name: p for p in PROPERTIES}

# Properties whose value is a list. user_property may repeat anywhere;
# subscription_identifier only in PUBLISH (once in SUBSCRIBE, §3.8.2.1.2).
LIST_PROPERTIES = frozenset({"user_property", "subscription_identifier"})
# Values the spec makes a Protocol Error: booleans other than 0/1, and zeros.
BOOLEAN_PROPERTIES = frozenset({
    "payload_format_indicator", "request_problem_information", "request_response_information",
    "maximum_qos", "retain_available", "wildcard_subscription_available",
    "subscription_identifier_available", "shared_subscription_available",
})  # fmt: skip
NONZERO_PROPERTIES = frozenset({"subscription_identifier", "receive_maximum", "topic_alias",
                                "maximum_packet_size"})  # fmt: skip


def _props() -> dict:
    return {}


@dataclass(slots=True)
class Will:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    properties: dict = field(default_factory=_props)


@dataclass(slots=True)
class Connect:
    protocol_name: str = "MQTT"
    protocol_level: int = 4  # 3 (MQTT 3.1, name "MQIsdp"), 4 (3.1.1) or 5
    clean_start: bool = True
    keepalive: int = 0
    client_id: str = ""
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    properties: dict = field(default_factory=_props)


@dataclass(slots=True)
class Connack:
    session_present: bool = False
    reason_code: int = 0
    properties: dict = field(default_factory=_props)


@dataclass(slots=True)
class Publish:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None  # None exactly when qos is 0
    properties: dict = field(default_factory=_props)


@dataclass(slots=True)
class Puback:
    packet_id: int
    reason_code: int = 0
    properties: dict = field(default_factory=_props)


@dataclass(slots=True)
class Pubrec:
    packet_id: int
    reason_code: int = 0
    properties: dict = field(default_factory=_props)


@dataclass(slots=True)
class Pubrel:
    packet_id: int
    reason_code: int = 0
    properties: dict = field(default_factory=_props)


@dataclass(slots=True)
class Pubcomp:
    packet_id: int
    reason_code: int = 0
    properties: dict = field(default_factory=_props)


@dataclass(slots=True)
class SubscriptionOptions:
    qos: int = 0
    no_local: bool = False  # 5.0 only, like the two below
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(slots=True)
class Subscribe:
    packet_id: int
    topics: list = field(default_factory=list)  # [(filter, SubscriptionOptions)]
    properties: dict = field(default_factory=_props)


@dataclass(slots=True)
class Suback:
    packet_id: int
    reason_codes: list = field(default_factory=list)
    properties: dict = field(default_factory=_props)


@dataclass(slots=True)
class Unsubscribe:
    packet_id: int
    topics: list = field(default_factory=list)  # [filter]
    properties: dict = field(default_factory=_props)


@dataclass(slots=True)
class Unsuback:
    packet_id: int
    reason_codes: list = field(default_factory=list)  # always empty in 3.1.1
    properties: dict = field(default_factory=_props)


@dataclass(slots=True)
class Pingreq:
    pass


@dataclass(slots=True)
class Pingresp:
    pass


@dataclass(slots=True)
class Disconnect:
    reason_code: int = 0
    properties: dict = field(default_factory=_props)


@dataclass(slots=True)
class Auth:  # 5.0 only
    reason_code: int = 0
    properties: dict = field(default_factory=_props)


PACKET_TYPES: dict[type, int] = {
    Connect: PKT_CONNECT, Connack: PKT_CONNACK, Publish: PKT_PUBLISH, Puback: PKT_PUBACK,
    Pubrec: PKT_PUBREC, Pubrel: PKT_PUBREL, Pubcomp: PKT_PUBCOMP, Subscribe: PKT_SUBSCRIBE,
    Suback: PKT_SUBACK, Unsubscribe: PKT_UNSUBSCRIBE, Unsuback: PKT_UNSUBACK,
    Pingreq: PKT_PINGREQ, Pingresp: PKT_PINGRESP, Disconnect: PKT_DISCONNECT, Auth: PKT_AUTH,
}  # fmt: skip
