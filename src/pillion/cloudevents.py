"""Facade over the CloudEvents twins: Dapr's pub/sub envelope, from ``pillion._impl``.

``envelope`` (a new CloudEvent around a published body), ``wrap`` (complete an app's own
``application/cloudevents+json``), ``raw`` (the event delivered for a ``rawPayload``
message), ``parse``, ``expired`` and ``is_cloudevent`` come from the compiled module
(``pillion._ext.cloudevents``) unless it is missing or ``PILLION_NO_EXTENSIONS`` is set.
``pillion._pure.cloudevents`` documents the rules; both raise
:class:`~pillion.cloudevents_errors.EnvelopeError`.
"""

from __future__ import annotations

from pillion._impl import load
from pillion.cloudevents_errors import EnvelopeError

_impl = load("cloudevents")

envelope = _impl.envelope
wrap = _impl.wrap
raw = _impl.raw
parse = _impl.parse
expired = _impl.expired
is_cloudevent = _impl.is_cloudevent

__all__ = ["envelope", "wrap", "raw", "parse", "expired", "is_cloudevent", "EnvelopeError"]
