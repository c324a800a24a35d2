"""Pub/sub over gRPC: the official SDK publishing and subscribing through a streaming subscription."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import threading
import time

import pytest

from _grpc import dapr_client, grpc_sidecar
from _http import json_request, request
from _mqtt import Client, Mosquitto
from pillion._testing import free_port, wait_for
from test_pubsub import SubscriberApp

import grpc  # noqa: E402 - after _grpc's importorskip
import paho.mqtt.client as mqtt  # noqa: E402
from dapr.clients.grpc._response import TopicEventResponse  # noqa: E402
from dapr.proto.runtime.v1 import appcallback_pb2, dapr_pb2_grpc, metadata_pb2, pubsub_pb2  # noqa: E402

_SCOPED = "{name: publishingScopes, value: 'pubsvc=allowed'}"


def _resources(tmp_path, url: str = ""):
    """``pubsub`` on the broker at ``url`` (the embedded one when empty) and a ``scoped`` one on
    which app ``pubsvc`` may publish only ``allowed``."""
    folder = tmp_path / "resources"
    folder.mkdir()
    head = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: %s}\nspec:\n  type: pubsub.mqtt\n  version: v1\n"
    at = f"  - {{name: url, value: '{url}'}}\n" if url else ""
    (folder / "pubsub.yaml").write_text(head % "pubsub" + "  metadata:\n  - {name: qos, value: '1'}\n" + at)
    (folder / "scoped.yaml").write_text(head % "scoped" + f"  metadata:\n  - {_SCOPED}\n")
    return folder


@pytest.fixture
def resources(tmp_path):
    return _resources(tmp_path)


def _start(sidecar, app_id, resources, *extra):
    return grpc_sidecar(sidecar, app_id, "--resources-path", str(resources), *extra)


def _stub(port: int):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, dapr_pb2_grpc.DaprStub(channel)


def _http_publish(sc, topic, body: bytes, content_type="application/json"):
    status, _, _ = request(sc.http_port, "POST", f"/v1.0/publish/pubsub/{topic}", body, {"Content-Type": content_type})
    assert status == 204


_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)


def _next(subscription, timeout=15.0):
    """``next_message`` blocks for ever; a test waits at most ``timeout`` seconds."""
    return _pool.submit(subscription.next_message).result(timeout=timeout)


def _streaming(sc) -> list[dict]:
    status, _, metadata = json_request(sc.http_port, "GET", "/v1.0/metadata")
    assert status == 200
    return [s for s in metadata["subscriptions"] if s["type"] == "STREAMING"]


# -- publishing ---------------------------------------------------------------------------


def test_sdk_publish_reaches_an_http_subscriber_as_the_http_api_would_send_it(tmp_path, processes, sidecar, resources):
    app = SubscriberApp(tmp_path, {"subscriptions": [{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}]})
    processes.append(app)
    sc = _start(sidecar, "shop", resources, "--app-port", str(app.port))
    wait_for(lambda: json_request(sc.http_port, "GET", "/v1.0/metadata")[2]["subscriptions"], what="subscription")
    passed = {"specversion": "1.0", "id": "ce-1", "source": "upstream", "type": "order.forwarded",
              "datacontenttype": "application/json", "data": {"n": 3}}
    with dapr_client(sc) as client:
        client.publish_event("pubsub", "orders", json.dumps({"n": 1}), data_content_type="application/json",
                             publish_metadata={"cloudevent.type": "order.created", "cloudevent.id": "fixed-1"})
        client.publish_event("pubsub", "orders", "plain words", data_content_type="text/plain")
        client.publish_event("pubsub", "orders", json.dumps(passed), data_content_type="application/cloudevents+json")
    wait_for(lambda: len(app.events()) == 3, what="three deliveries")
    by_id = {e["id"]: e for e in app.events()}
    first = by_id["fixed-1"]
    assert (first["type"], first["source"], first["topic"], first["pubsubname"]) == (
        "order.created", "shop", "orders", "pubsub")
    assert first["data"] == {"n": 1} and first["datacontenttype"] == "application/json"
    text = next(e for e in app.events() if e.get("datacontenttype") == "text/plain")
    assert text["data"] == "plain words" and text["type"] == "com.dapr.event.sent"
    kept = by_id["ce-1"]  # a CloudEvent passes through with its own attributes, topic and pubsub added
    assert (kept["source"], kept["type"], kept["data"], kept["topic"]) == ("upstream", "order.forwarded", {"n": 3},
                                                                          "orders")


def test_raw_payload_reaches_an_mqtt_client_byte_for_byte(sidecar, resources):
    mqtt_port = free_port()
    sc = _start(sidecar, "rawpub", resources, "--mqtt-port", str(mqtt_port))
    listener = Client(mqtt_port, mqtt.MQTTv311)
    try:
        listener.subscribe("sensors/+/raw", qos=1)
        payload = bytes(range(256))
        with dapr_client(sc) as client:
            client.publish_event("pubsub", "sensors/t1/raw", payload, publish_metadata={"rawPayload": "true"},
                                 data_content_type="application/octet-stream")
            client.publish_event("pubsub", "sensors/t2/raw", payload, data_content_type="application/octet-stream")
        raw = listener.get()
        assert (raw.topic, raw.payload) == ("sensors/t1/raw", payload)
        wrapped = listener.get()
        event = json.loads(wrapped.payload)
        assert wrapped.topic == "sensors/t2/raw"
        assert base64.b64decode(event["data_base64"]) == payload and event["source"] == "rawpub"
    finally:
        listener.close()


def test_sdk_bulk_publish(sidecar, resources):
    mqtt_port = free_port()
    sc = _start(sidecar, "bulkpub", resources, "--mqtt-port", str(mqtt_port))
    listener = Client(mqtt_port, mqtt.MQTTv311)
    try:
        listener.subscribe("batch", qos=1)
        with dapr_client(sc) as client:
            response = client.publish_events("pubsub", "batch", ["a", "b", "c"], data_content_type="text/plain",
                                             publish_metadata={"cloudevent.source": "line-4"})
        assert response.failed_entries == []
        events = [json.loads(listener.get().payload) for _ in range(3)]
        assert sorted(e["data"] for e in events) == ["a", "b", "c"]
        assert {e["source"] for e in events} == {"line-4"} and len({e["id"] for e in events}) == 3
    finally:
        listener.close()


# -- streaming subscriptions -------------------------------------------------------------


def test_stream_receives_http_publishes_and_retry_redelivers(sidecar, resources):
    sc = _start(sidecar, "streamer", resources)
    with dapr_client(sc) as client:
        subscription = client.subscribe("pubsub", "alerts")
        try:
            listed = _streaming(sc)
            assert [(s["pubsubname"], s["topic"]) for s in listed] == [("pubsub", "alerts")]
            channel, stub = _stub(sc.grpc_port)  # the SDK's metadata answer leaves subscriptions out
            with channel:
                grpc_listed = stub.GetMetadata(metadata_pb2.GetMetadataRequest(), timeout=5).subscriptions
            assert [(s.pubsub_name, s.topic, s.type, [r.path for r in s.rules.rules]) for s in grpc_listed] == [
                ("pubsub", "alerts", metadata_pb2.PubsubSubscriptionType.STREAMING, ["/"])]
            _http_publish(sc, "alerts", b'{"level": "high"}')
            message = _next(subscription)
            assert (message.topic(), message.pubsub_name(), message.data()) == ("alerts", "pubsub", {"level": "high"})
            assert message.data_content_type() == "application/json" and message.source() == "streamer"
            assert message.extensions()["topic"] == "alerts"  # the envelope's other attributes
            subscription.respond_retry(message)
            again = _next(subscription)
            assert again.id() == message.id() and again.data() == {"level": "high"}
            subscription.respond_success(again)
            _http_publish(sc, "alerts", b"second", "text/plain")
            after = _next(subscription)
            assert after.data() == "second"  # the acknowledged one did not come back
            subscription.respond_success(after)
        finally:
            subscription.close()
        wait_for(lambda: not _streaming(sc), what="the closed stream leaves the metadata")


@pytest.mark.parametrize("broker_kind", ["embedded", "mosquitto"])
def test_closed_stream_redelivers_to_the_next_subscriber(tmp_path, processes, sidecar, broker_kind):
    url = ""
    if broker_kind == "mosquitto":
        (tmp_path / "mosquitto").mkdir()
        mosquitto = Mosquitto(tmp_path / "mosquitto")
        processes.append(mosquitto)
        url = f"tcp://127.0.0.1:{mosquitto.port}"
    sc = _start(sidecar, "handover", _resources(tmp_path, url))
    with dapr_client(sc) as client:
        first = client.subscribe("pubsub", "jobs")
        _http_publish(sc, "jobs", b'{"job": 7}')
        taken = _next(first)
        first.close()  # never answered: nothing was acknowledged to the broker
        wait_for(lambda: not _streaming(sc), what="first stream gone")
        _http_publish(sc, "jobs", b'{"job": 8}')  # published while no stream is open
        second = client.subscribe("pubsub", "jobs")
        try:
            got = {}
            for _ in range(2):
                message = _next(second)
                got[message.id()] = message.data()
                second.respond_success(message)
            assert got[taken.id()] == {"job": 7}
            assert sorted(d["job"] for d in got.values()) == [7, 8]
        finally:
            second.close()


def test_unanswered_event_survives_a_restart(sidecar, resources):
    """Stopping ends the streams after the grace period; what they held is still the broker's."""
    sc = _start(sidecar, "restarts", resources)
    with dapr_client(sc) as client:
        first = client.subscribe("pubsub", "durable")
        _http_publish(sc, "durable", b'{"n": 1}')
        taken = _next(first)
        started = time.monotonic()
        assert sc.stop() == 0  # within the test's 10 s: the open stream does not hold the sidecar up
        assert time.monotonic() - started < 9
        first.close()
    again = grpc_sidecar(sidecar, "restarts", "--resources-path", str(resources), http_port=sc.http_port)
    with dapr_client(again) as client:
        second = client.subscribe("pubsub", "durable")
        try:
            message = _next(second)
            assert (message.id(), message.data()) == (taken.id(), {"n": 1})
            second.respond_success(message)
        finally:
            second.close()


def test_subscribe_with_handler_drop_goes_to_the_dead_letter_stream(sidecar, resources):
    sc = _start(sidecar, "handler", resources)
    seen, dead = [], []
    lock = threading.Lock()

    def handle(message):
        with lock:
            seen.append(message.data())
        return TopicEventResponse("drop" if message.data() == "bad" else "success")

    def handle_dead(message):
        with lock:
            dead.append(message.data())
        return TopicEventResponse("success")

    with dapr_client(sc) as client:
        close = client.subscribe_with_handler("pubsub", "readings", handle, dead_letter_topic="readings-dlq")
        close_dead = client.subscribe_with_handler("pubsub", "readings-dlq", handle_dead)
        try:
            wait_for(lambda: len(_streaming(sc)) == 2, what="two streams")
            listed = {s["topic"]: s for s in _streaming(sc)}
            assert listed["readings"]["deadLetterTopic"] == "readings-dlq"
            for word in ("ok-1", "bad", "ok-2"):
                _http_publish(sc, "readings", word.encode(), "text/plain")
            wait_for(lambda: len(seen) == 3 and dead == ["bad"], what="deliveries and the dead letter")
            assert sorted(seen) == ["bad", "ok-1", "ok-2"]
        finally:
            close()
            close_dead()


def test_raw_payload_stream_gets_the_published_bytes(sidecar, resources):
    mqtt_port = free_port()
    sc = _start(sidecar, "rawsub", resources, "--mqtt-port", str(mqtt_port))
    with dapr_client(sc) as client:
        subscription = client.subscribe("pubsub", "plc/1", metadata={"rawPayload": "true"})
        try:
            device = Client(mqtt_port, mqtt.MQTTv311)
            try:
                device.publish("plc/1", b"\x00\xffvalue", qos=1)  # a plain MQTT device, no CloudEvent
            finally:
                device.close()
            message = _next(subscription)
            assert message.raw_data() == b"\x00\xffvalue"
            assert message.data_content_type() == "application/octet-stream" and message.topic() == "plc/1"
            subscription.respond_success(message)
        finally:
            subscription.close()


# -- bad input ----------------------------------------------------------------------------


def _code(call):
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value.code(), error.value.details()


def _stream_error(stub, *requests):
    return _code(lambda: next(stub.SubscribeTopicEventsAlpha1(iter(requests), timeout=10)))


def _initial(pubsub_name="pubsub", topic="t"):
    return pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
        initial_request=pubsub_pb2.SubscribeTopicEventsRequestInitialAlpha1(pubsub_name=pubsub_name, topic=topic))


def test_bad_requests_get_daprds_status_codes_and_both_fronts_keep_serving(sidecar, resources):
    sc = _start(sidecar, "pubsvc", resources)
    channel, stub = _stub(sc.grpc_port)
    with channel:
        publish = pubsub_pb2.PublishEventRequest
        assert _code(lambda: stub.PublishEvent(publish(pubsub_name="nope", topic="t", data=b"{}"), timeout=5)) == (
            grpc.StatusCode.INVALID_ARGUMENT, "pubsub nope not found")
        assert _code(lambda: stub.PublishEvent(publish(pubsub_name="pubsub", topic="", data=b"{}"), timeout=5)) == (
            grpc.StatusCode.INVALID_ARGUMENT, "topic is empty in pubsub pubsub")
        assert _code(lambda: stub.PublishEvent(publish(pubsub_name="", topic="t"), timeout=5)) == (
            grpc.StatusCode.INVALID_ARGUMENT, "pubsub name is empty")
        assert _code(lambda: stub.PublishEvent(publish(pubsub_name="scoped", topic="other"), timeout=5)) == (
            grpc.StatusCode.PERMISSION_DENIED, "topic other is not allowed for app id pubsvc")
        stub.PublishEvent(publish(pubsub_name="scoped", topic="allowed", data=b"{}"), timeout=5)
        code, _ = _code(lambda: stub.PublishEvent(
            publish(pubsub_name="pubsub", topic="t", data=b"x", metadata={"rawPayload": "maybe"}), timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        code, _ = _code(lambda: stub.PublishEvent(
            publish(pubsub_name="pubsub", topic="t", data=b"{not json", data_content_type="application/cloudevents+json"),
            timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT  # ERR_PUBSUB_CLOUD_EVENTS_SER
        entry = pubsub_pb2.BulkPublishRequestEntry
        duplicated = pubsub_pb2.BulkPublishRequest(pubsub_name="pubsub", topic="t", entries=[
            entry(entry_id="1", event=b"a", content_type="text/plain"),
            entry(entry_id="1", event=b"b", content_type="text/plain")])
        assert _code(lambda: stub.BulkPublishEventAlpha1(duplicated, timeout=5)) == (
            grpc.StatusCode.INVALID_ARGUMENT, "entryId 1 is duplicated")
        # The broker refuses a topic with a wildcard: INTERNAL, and for bulk the error alone, as daprd.
        code, details = _code(lambda: stub.PublishEvent(publish(pubsub_name="pubsub", topic="bad/#"), timeout=5))
        assert code == grpc.StatusCode.INTERNAL
        assert details.startswith("error when publish to topic bad/# in pubsub pubsub: ")
        refused = pubsub_pb2.BulkPublishRequest(pubsub_name="pubsub", topic="bad/#", entries=[
            entry(entry_id="1", event=b"a", content_type="text/plain")])
        code, details = _code(lambda: stub.BulkPublishEvent(refused, timeout=5))
        assert code == grpc.StatusCode.INTERNAL
        assert details.startswith("error when publish to topic bad/# in pubsub pubsub: ")
        processed = pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
            event_processed=pubsub_pb2.SubscribeTopicEventsRequestProcessedAlpha1(id="x"))
        assert _stream_error(stub, processed) == (grpc.StatusCode.UNKNOWN, "initial request is required")
        assert _stream_error(stub, _initial(topic="")) == (grpc.StatusCode.UNKNOWN, "topic is required")
        assert _stream_error(stub, _initial(pubsub_name="")) == (grpc.StatusCode.UNKNOWN, "pubsubName is required")
        assert _stream_error(stub, _initial(pubsub_name="nope")) == (
            grpc.StatusCode.INVALID_ARGUMENT, "pubsub nope not found")
        # A second initial request on an open stream ends it, as daprd does.
        calls = stub.SubscribeTopicEventsAlpha1(iter([_initial(), _initial()]), timeout=10)
        with pytest.raises(grpc.RpcError) as error:
            for _ in calls:
                pass
        assert (error.value.code(), error.value.details()) == (grpc.StatusCode.UNKNOWN,
                                                               "duplicate initial request received")
        assert not _streaming(sc)
        # Both fronts still serve.
        stub.PublishEvent(publish(pubsub_name="pubsub", topic="t", data=b"{}"), timeout=5)
    _http_publish(sc, "t", b"{}")
    with dapr_client(sc) as client:
        client.publish_event("pubsub", "t", "{}")


def test_raw_stream_answers_settle_by_id(sidecar, resources):
    """Over the raw stubs: the initial response first, then events whose answers are matched by id."""
    sc = _start(sidecar, "rawstream", resources)
    channel, stub = _stub(sc.grpc_port)
    answers = []
    ready = threading.Event()

    def outgoing():
        yield _initial(topic="ids")
        while True:
            if answers:
                yield answers.pop(0)
            elif ready.is_set():
                return
            else:
                time.sleep(0.02)

    status = appcallback_pb2.TopicEventResponse
    with channel:
        stream = stub.SubscribeTopicEventsAlpha1(outgoing(), timeout=20)
        first = next(stream)
        assert first.HasField("initial_response")
        _http_publish(sc, "ids", b'{"k": 1}')
        event = next(stream).event_message
        assert (event.topic, event.pubsub_name, event.path, json.loads(event.data)) == ("ids", "pubsub", "/", {"k": 1})
        assert event.spec_version == "1.0" and event.type == "com.dapr.event.sent"
        # An answer for an id never sent is ignored; the real one settles the event.
        for event_id in ("not-sent", event.id):
            answers.append(pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                event_processed=pubsub_pb2.SubscribeTopicEventsRequestProcessedAlpha1(
                    id=event_id, status=status(status=status.SUCCESS))))
        _http_publish(sc, "ids", b'{"k": 2}')
        assert json.loads(next(stream).event_message.data) == {"k": 2}
        ready.set()  # closing our side ends the subscription (daprd's io.EOF)
        assert list(stream) == []
    wait_for(lambda: not _streaming(sc), what="stream gone")
