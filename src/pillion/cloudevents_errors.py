"""The one exception both CloudEvents twins raise, kept apart so either imports it without cycles.

``pillion._pure.cloudevents`` and ``pillion._ext.cloudevents`` both raise this class (as the
MQTT twins share ``pillion.broker.packets.MQTTDecodeError``), so one ``except`` catches either.
"""

from __future__ import annotations

from pillion.errors import PillionError


class EnvelopeError(PillionError, ValueError):
    """A body that should be a CloudEvent is not valid JSON or not a JSON object."""
