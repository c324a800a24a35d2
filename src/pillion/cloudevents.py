"""Facade over the CloudEvents twins: Dapr's pub/sub envelope, from ``pillion._impl``.

``envelope`` (a new CloudEvent around a published body), ``wrap`` (complete an app's own
``application/cloudevents+json``), ``raw`` (the event delivered for a ``rawPayload``
message), ``parse``, ``expired`` and ``is_cloudevent`` come from the compiled module
(``pillion._ext.cloudevents``) unless it is missing or ``PILLION_NO_EXTENSIONS`` is set.
``pillion._pure.cloudevents`` documents the rules; both raise
:class:`~pillion.cloudevents_errors.EnvelopeError`.
"""

from __future__ import annotations

import os

from pillion._impl import load
from pillion.cloudevents_errors import EnvelopeError

_impl = load("cloudevents")

envelope = _impl.envelope
wrap = _impl.wrap
raw = _impl.raw
parse = _impl.parse
expired = _impl.expired
is_cloudevent = _impl.is_cloudevent

__all__ = ["envelope", "wrap", "raw", "parse", "expired", "is_cloudevent", "new_id", "EnvelopeError"]


def new_id() -> str:
    """A random (version 4) UUID as text: what ``str(uuid.uuid4())`` gives, at half the cost."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"
