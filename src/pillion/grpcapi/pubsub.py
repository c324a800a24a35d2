"""PublishEvent, BulkPublishEvent(Alpha1) and the streaming SubscribeTopicEventsAlpha1.

Publishing goes through the HTTP API's functions (``api/pubsub.py``): the same checks,
the same CloudEvent envelope, the same component call. The streaming subscription is a
``runtime.pubsub.StreamSubscriber``: the runtime applies the usual expiry, retry and
dead-letter rules and this module only turns its CloudEvents into ``TopicEventRequest``
messages and the client's ``event_processed`` answers into outcomes.
"""

from __future__ import annotations

import asyncio
import logging

from dapr.proto.runtime.v1 import appcallback_pb2, pubsub_pb2
from google.protobuf import empty_pb2

from ..api import pubsub as http_pubsub
from ..components.pubsub import Outcome
from ..errors import DaprError
from .events import topic_event_request
from .status import StatusCode

log = logging.getLogger("pillion.grpcapi.pubsub")

_EMPTY = empty_pb2.Empty()
_INITIAL = pubsub_pb2.SubscribeTopicEventsResponseAlpha1(
    initial_response=pubsub_pb2.SubscribeTopicEventsResponseInitialAlpha1())
_STATUS = appcallback_pb2.TopicEventResponse
_OUTCOMES = {_STATUS.SUCCESS: Outcome.SUCCESS, _STATUS.RETRY: Outcome.RETRY, _STATUS.DROP: Outcome.DROP}


def _trace(context) -> tuple[str, str]:
    """The caller's W3C trace context from the gRPC metadata, as HTTP takes it from headers."""
    found = {}
    for key, value in context.invocation_metadata() or ():
        if key in ("traceparent", "tracestate") and key not in found:
            found[key] = value if isinstance(value, str) else value.decode("latin-1")
    return found.get("traceparent", ""), found.get("tracestate", "")


async def publish_event(sidecar, request, context):
    binding, topic = http_pubsub.lookup(sidecar, request.pubsub_name, request.topic)
    metadata = dict(request.metadata)
    data = http_pubsub.envelope(sidecar, binding, topic, request.data, request.data_content_type or None, metadata,
                                *_trace(context))  # fmt: skip
    await http_pubsub.send(binding, topic, data, metadata)
    return _EMPTY


async def bulk_publish_event(sidecar, request, context):
    """All published: an empty ``failedEntries``. Any entry refused: INTERNAL, as daprd answers.

    daprd's bulk publisher reports an error with its failed entries, and its gRPC handler
    then answers with the error alone (Go drops the message next to an error status), so
    ``failedEntries`` is never filled over gRPC; the HTTP API does list them.
    """
    binding, topic = http_pubsub.lookup(sidecar, request.pubsub_name, request.topic)
    query = dict(request.metadata)
    trace = _trace(context)
    seen: set[str] = set()
    prepared = []
    for index, entry in enumerate(request.entries):
        entry_id = http_pubsub.check_entry_id(entry.entry_id, index, seen)
        prepared.append(http_pubsub.bulk_entry(sidecar, binding, topic, entry_id, entry.event,
                                               entry.content_type or None, {**query, **entry.metadata}, *trace))
    failed = await http_pubsub.bulk_send(binding, topic, prepared)
    if failed:
        raise DaprError("ERR_PUBSUB_PUBLISH_MESSAGE",
                        f"error when publish to topic {topic} in pubsub {binding.name}: {failed[0][1]}")
    return pubsub_pb2.BulkPublishResponse()


# -- streaming subscription ---------------------------------------------------------------


async def subscribe_topic_events(sidecar, requests, context):
    """The stream's first message subscribes; each later one settles an event sent on it.

    Errors are daprd's: plain messages (status UNKNOWN) for a missing initial request,
    an empty pubsub name or topic, and a second initial request; the publish checks'
    codes for an unknown pubsub or a topic the app may not subscribe.
    """
    first = await anext(requests, None)
    initial = first.initial_request if first is not None and first.HasField("initial_request") else None
    if initial is None:
        await context.abort(StatusCode.UNKNOWN, "initial request is required")
    if not initial.pubsub_name:
        await context.abort(StatusCode.UNKNOWN, "pubsubName is required")
    if not initial.topic:
        await context.abort(StatusCode.UNKNOWN, "topic is required")
    binding, topic = http_pubsub.lookup(sidecar, initial.pubsub_name, initial.topic, publishing=False)
    try:
        stream = await sidecar.subscriptions.open_stream(binding, topic, dict(initial.metadata),
                                                         initial.dead_letter_topic or None)
    except ValueError as exc:
        await context.abort(StatusCode.UNKNOWN, str(exc))
    reader = asyncio.get_running_loop().create_task(_answers(requests, stream))
    try:
        yield _INITIAL
        while True:
            item = await stream.outbox.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            event, event_topic = item
            yield pubsub_pb2.SubscribeTopicEventsResponseAlpha1(
                event_message=topic_event_request(event, binding.name, event_topic, "/"))
    finally:
        reader.cancel()
        sidecar.subscriptions.close_stream(stream)
    if reader.done() and not reader.cancelled() and isinstance(reader.result(), str):
        await context.abort(StatusCode.UNKNOWN, reader.result())


async def _answers(requests, stream) -> str | None:
    """Feed the client's answers to ``stream``; its end (or a protocol error, returned) ends the stream."""
    try:
        async for message in requests:
            if not message.HasField("event_processed"):
                stream.outbox.put_nowait(None)
                return "duplicate initial request received"
            processed = message.event_processed
            stream.answer(processed.id, _OUTCOMES.get(processed.status.status, Outcome.RETRY))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed message (DaprError) or a broken stream
        stream.outbox.put_nowait(exc)
        return None
    stream.outbox.put_nowait(None)  # the client closed its side: daprd unsubscribes
    return None


METHODS = {
    "PublishEvent": publish_event,
    "BulkPublishEventAlpha1": bulk_publish_event,
    "BulkPublishEvent": bulk_publish_event,
    "SubscribeTopicEventsAlpha1": subscribe_topic_events,
}
