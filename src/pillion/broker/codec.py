"""Facade over the MQTT packet codec twins: ``decode``/``encode`` from ``pillion._impl``.

``decode(data, protocol_level, max_packet_size) -> (packet | None, consumed)`` and
``encode(packet, protocol_level) -> bytes`` come from the compiled module
(``pillion._ext.mqttcodec``) unless it is missing or ``PILLION_NO_EXTENSIONS`` is set.
The packet classes and constants live in :mod:`pillion.broker.packets`.
"""

from __future__ import annotations

from pillion._impl import load

from .packets import MQTTDecodeError

_impl = load("mqttcodec")

decode = _impl.decode
encode = _impl.encode

__all__ = ["decode", "encode", "MQTTDecodeError"]
