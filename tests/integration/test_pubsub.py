"""Pub/sub through a real sidecar to a real subscriber app, on the embedded broker and on Mosquitto."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from _http import json_request, request
from _mqtt import Mosquitto

from pillion._testing import Process, Sidecar, free_port, http_status, wait_for

class SubscriberApp(Process):
    def __init__(self, tmp: Path, config: dict, port: int | None = None):
        self.port = port or free_port()
        self.record = Path(config.setdefault("record", str(tmp / f"received-{self.port}.jsonl")))
        env = dict(os.environ, SUBSCRIBER_CONFIG=json.dumps(config))
        super().__init__([sys.executable, "-m", "pillion._testing.subscriber_app", str(self.port)],
                         tmp / f"subscriber-{self.port}-{uuid.uuid4().hex[:4]}.log", env=env)
        wait_for(lambda: http_status(self.port, "/healthz") == 200, what="subscriber app")

    def received(self, accepted_only: bool = True) -> list[dict]:
        if not self.record.exists():
            return []
        # Only complete lines: the app may be writing the last one right now.
        lines = [json.loads(line) for line in self.record.read_text().split("\n")[:-1] if line.strip()]
        return [entry for entry in lines if entry["accepted"] or not accepted_only]

    def started(self) -> int:
        status, _, body = request(self.port, "GET", "/started")
        return int(body) if status == 200 else 0

    def events(self) -> list[dict]:
        return [json.loads(entry["body"]) for entry in self.received()]


@pytest.fixture(params=["embedded", "mosquitto"])
def broker_kind(request):
    return request.param


@pytest.fixture
def pubsub(tmp_path, processes, broker_kind):
    """A resources folder with a `pubsub` component on the broker under test (and its url)."""
    resources = tmp_path / "resources"
    resources.mkdir()
    url = ""
    if broker_kind == "mosquitto":
        (tmp_path / "mosquitto").mkdir()
        mosquitto = Mosquitto(tmp_path / "mosquitto")
        processes.append(mosquitto)
        url = f"tcp://127.0.0.1:{mosquitto.port}"
    metadata = f"  - {{name: url, value: '{url}'}}\n" if url else ""
    (resources / "pubsub.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: pubsub}\n"
        f"spec:\n  type: pubsub.mqtt\n  version: v1\n  metadata:\n  - {{name: qos, value: '1'}}\n{metadata}")
    return resources


def _start(tmp_path, processes, resources, app_port, *extra, app_id="subscriber", http_port=None):
    sidecar = Sidecar(tmp_path, app_id, "--resources-path", str(resources), "--app-port", str(app_port), *extra,
                      http_port=http_port)
    processes.append(sidecar)
    return sidecar


def _publish(sidecar, topic, body, content_type="application/json", query=""):
    status, _, data = request(sidecar.http_port, "POST", f"/v1.0/publish/pubsub/{topic}{query}", body,
                              {"Content-Type": content_type})
    return status, data


def _subscribed(sidecar, count: int = 1):
    def ready():
        status, _, metadata = json_request(sidecar.http_port, "GET", "/v1.0/metadata")
        return status == 200 and len(metadata["subscriptions"]) >= count

    wait_for(ready, what="subscriptions in the metadata")


def test_publish_reaches_the_app_as_a_cloudevent(tmp_path, processes, pubsub):
    app = SubscriberApp(tmp_path, {"subscriptions": [{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}]})
    processes.append(app)
    sidecar = _start(tmp_path, processes, pubsub, app.port, app_id="shop")
    _subscribed(sidecar)
    status, _ = _publish(sidecar, "orders", b'{"id": 1, "amount": 12345678901234567890}')
    assert status == 204
    wait_for(lambda: app.received(), what="delivery")
    entry = app.received()[0]
    assert entry["path"] == "/orders"
    assert entry["headers"]["content-type"] == "application/cloudevents+json"
    event = json.loads(entry["body"])
    assert (event["topic"], event["pubsubname"], event["source"], event["type"], event["specversion"]) == (
        "orders", "pubsub", "shop", "com.dapr.event.sent", "1.0")
    assert event["datacontenttype"] == "application/json"
    assert '"amount": 12345678901234567890' in entry["body"] or '"amount":12345678901234567890' in entry["body"]
    status, _, metadata = json_request(sidecar.http_port, "GET", "/v1.0/metadata")
    assert metadata["subscriptions"][0]["topic"] == "orders"
    assert metadata["subscriptions"][0]["type"] == "PROGRAMMATIC"


def test_routing_rules_and_dead_letters(tmp_path, processes, pubsub):
    (pubsub / "subscription.yaml").write_text("""\
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: widgets}
spec:
  pubsubname: pubsub
  topic: inventory
  routes:
    rules:
    - {match: 'event.type == "widget"', path: /widgets}
    - {match: 'event.data.count > 10', path: /drop}
    default: /other
  deadLetterTopic: poisoned
scopes: [inventory-app]
""")
    app = SubscriberApp(tmp_path, {"subscriptions": [
        {"pubsubname": "pubsub", "topic": "poisoned", "route": "/dead"}]})  # fmt: skip
    processes.append(app)
    sidecar = _start(tmp_path, processes, pubsub, app.port, app_id="inventory-app")
    _subscribed(sidecar, 2)
    assert _publish(sidecar, "inventory", b'{"count": 1}', query="?metadata.cloudevent.type=widget")[0] == 204
    assert _publish(sidecar, "inventory", b'{"count": 50}')[0] == 204
    assert _publish(sidecar, "inventory", b'{"count": 2}')[0] == 204
    wait_for(lambda: len(app.received()) >= 3, what="three deliveries")
    paths = sorted(entry["path"] for entry in app.received())
    assert paths == ["/dead", "/other", "/widgets"]
    dead = next(e for e in app.received() if e["path"] == "/dead")
    assert json.loads(dead["body"])["data"] == {"count": 50}


def test_raw_payloads_both_ways(tmp_path, processes, broker_kind, pubsub):
    """A device's mosquitto_pub reaches a raw subscription; a raw publish reaches mosquitto_sub."""
    app = SubscriberApp(tmp_path, {"subscriptions": [
        {"pubsubname": "pubsub", "topic": "sensors/+/temp", "route": "/temp", "metadata": {"rawPayload": "true"}}]})
    processes.append(app)
    mqtt_port = free_port()
    sidecar = _start(tmp_path, processes, pubsub, app.port, "--mqtt-port", str(mqtt_port))
    _subscribed(sidecar)
    broker_port = mqtt_port if broker_kind == "embedded" else int(
        (pubsub / "pubsub.yaml").read_text().split("127.0.0.1:")[1].split("'")[0])
    subprocess.run(["mosquitto_pub", "-p", str(broker_port), "-q", "1", "-t", "sensors/kitchen/temp", "-m", "21.5"],
                   check=True, timeout=10)
    wait_for(lambda: app.received(), what="raw delivery")
    event = app.events()[0]
    assert base64.b64decode(event["data_base64"]) == b"21.5"
    assert event["topic"] == "sensors/kitchen/temp"
    assert event["datacontenttype"] == "application/octet-stream"
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker_port), "-t", "alerts/#", "-C", "1", "-W", "10", "-v"],
                           stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        assert _publish(sidecar, "alerts/kitchen", b"too hot", "text/plain", "?metadata.rawPayload=true")[0] == 204
        out, _ = sub.communicate(timeout=10)
        assert out.strip() == "alerts/kitchen too hot"
    finally:
        sub.kill()


def test_app_answers(tmp_path, processes, pubsub):
    """RETRY and 500 are delivered again; DROP, 404 and garbage bodies end the delivery."""
    app = SubscriberApp(tmp_path, {"fail_rate": 0.5, "fail_with": "RETRY", "subscriptions": [
        {"pubsubname": "pubsub", "topic": "retry", "route": "/ok"},
        {"pubsubname": "pubsub", "topic": "gone", "route": "/status/404"},
        {"pubsubname": "pubsub", "topic": "weird", "route": "/garbage"},
    ]})  # fmt: skip
    processes.append(app)
    sidecar = _start(tmp_path, processes, pubsub, app.port)
    _subscribed(sidecar, 3)
    for n in range(10):
        assert _publish(sidecar, "retry", json.dumps({"n": n}).encode())[0] == 204
    assert _publish(sidecar, "gone", b"{}")[0] == 204
    assert _publish(sidecar, "weird", b"{}")[0] == 204
    wait_for(lambda: len([e for e in app.received() if e["path"] == "/ok"]) == 10, timeout=30,
             what="all ten delivered despite RETRY answers")
    assert sorted(json.loads(e["body"])["data"]["n"] for e in app.received() if e["path"] == "/ok") == list(range(10))
    time.sleep(1.0)
    gone = [e for e in app.received(accepted_only=False) if e["path"] == "/status/404"]
    weird = [e for e in app.received(accepted_only=False) if e["path"] == "/garbage"]
    assert len(gone) == 1 and len(weird) == 1  # not delivered again


def test_publish_errors(tmp_path, processes, pubsub):
    app = SubscriberApp(tmp_path, {"subscriptions": 404})
    processes.append(app)
    sidecar = _start(tmp_path, processes, pubsub, app.port)
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/publish/nope/t", b"{}")
    assert (status, body["errorCode"]) == (404, "ERR_PUBSUB_NOT_FOUND")
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/publish/pubsub", b"{}")
    assert (status, body["errorCode"]) == (404, "ERR_TOPIC_NAME_EMPTY")
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/publish/pubsub/t?metadata.rawPayload=maybe", b"{}")
    assert (status, body["errorCode"]) == (400, "ERR_PUBSUB_REQUEST_METADATA")
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/publish/pubsub/t", b"[1, 2]",
                                   {"Content-Type": "application/cloudevents+json"})
    assert body["errorCode"] == "ERR_PUBSUB_CLOUD_EVENTS_SER"
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0/publish/pubsub/a/+/b", b"{}")
    assert (status, body["errorCode"]) == (500, "ERR_PUBSUB_PUBLISH_MESSAGE")
    assert sidecar.alive()


def test_bulk_publish(tmp_path, processes, pubsub):
    app = SubscriberApp(tmp_path, {"subscriptions": [{"pubsubname": "pubsub", "topic": "bulk", "route": "/in"}]})
    processes.append(app)
    sidecar = _start(tmp_path, processes, pubsub, app.port)
    _subscribed(sidecar)
    entries = [{"entryId": "1", "event": {"a": 1}, "contentType": "application/json"},
               {"entryId": "2", "event": "plain", "contentType": "text/plain"},
               {"entryId": "3", "event": base64.b64encode(b"\x00\x01").decode(),
                "contentType": "application/octet-stream"}]  # fmt: skip
    status, _, _ = request(sidecar.http_port, "POST", "/v1.0-alpha1/publish/bulk/pubsub/bulk", json.dumps(entries))
    assert status == 204
    wait_for(lambda: len(app.received()) == 3, what="three deliveries")
    events = {e.get("datacontenttype"): e for e in app.events()}
    assert events["application/json"]["data"] == {"a": 1}
    assert events["text/plain"]["data"] == "plain"
    assert base64.b64decode(events["application/octet-stream"]["data_base64"]) == b"\x00\x01"
    status, _, body = json_request(sidecar.http_port, "POST", "/v1.0-alpha1/publish/bulk/pubsub/bulk",
                                   json.dumps([{"entryId": "1", "event": 1}, {"entryId": "1", "event": 2}]))
    assert (status, body["errorCode"]) == (400, "ERR_PUBSUB_EVENTS_SER")


@pytest.mark.timeout(120)
def test_at_least_once_while_the_sidecar_is_killed(tmp_path, processes, pubsub):
    """10% of deliveries are refused at random, the sidecar is killed twice: every
    published (204) message still reaches the app at least once."""
    total = 10_000
    app = SubscriberApp(tmp_path, {"fail_rate": 0.1, "fail_with": 500, "subscriptions": [
        {"pubsubname": "pubsub", "topic": "work", "route": "/work"}]})  # fmt: skip
    processes.append(app)
    http_port = free_port()
    sidecar = _start(tmp_path, processes, pubsub, app.port, app_id="worker", http_port=http_port)
    _subscribed(sidecar)
    published = set()
    n = 0
    kills = {total // 3, 2 * total // 3}
    while n < total:
        if n in kills and sidecar.alive():
            sidecar.stop(signal.SIGKILL)
            sidecar = _start(tmp_path, processes, pubsub, app.port, app_id="worker", http_port=http_port)
            kills.discard(n)
        try:
            status, _ = _publish(sidecar, "work", json.dumps({"n": n}).encode())
        except OSError:
            status = 0
        if status == 204:
            published.add(n)
            n += 1
    def delivered() -> list[int]:
        return [json.loads(e["body"])["data"]["n"] for e in app.received()]

    deadline = time.monotonic() + 60
    while not published <= set(delivered()):
        missing = sorted(published - set(delivered()))
        assert time.monotonic() < deadline, f"{len(missing)} never delivered, e.g. {missing[:20]}"
        time.sleep(0.2)
    delivered = delivered()
    duplicates = len(delivered) - len(set(delivered))
    print(f"{len(published)} published, {len(delivered)} accepted deliveries, {duplicates} duplicates")


@pytest.mark.timeout(120)
def test_messages_published_while_the_app_is_down_arrive_later(tmp_path, processes, pubsub):
    config = {"subscriptions": [{"pubsubname": "pubsub", "topic": "later", "route": "/later"}]}
    app = SubscriberApp(tmp_path, dict(config))
    processes.append(app)
    sidecar = _start(tmp_path, processes, pubsub, app.port)
    _subscribed(sidecar)
    app.stop()
    for n in range(300):
        assert _publish(sidecar, "later", json.dumps({"n": n}).encode())[0] == 204
    time.sleep(1.0)  # deliveries fail meanwhile and are retried
    app = SubscriberApp(tmp_path, dict(config, record=str(app.record)), port=app.port)
    processes.append(app)
    wait_for(lambda: {e["n"] for e in (ev["data"] for ev in app.events())} == set(range(300)), timeout=60,
             what="every message once the app is back")
    assert sidecar.alive()


def test_consumer_groups(tmp_path, processes, pubsub):
    """Two replicas of one app id share the topic; another app id gets every message."""
    subscription = {"subscriptions": [{"pubsubname": "pubsub", "topic": "jobs", "route": "/jobs"}]}
    mqtt_port = free_port()
    replicas = [SubscriberApp(tmp_path, dict(subscription)) for _ in range(2)]
    other = SubscriberApp(tmp_path, dict(subscription))
    processes.extend([*replicas, other])
    sidecars = [_start(tmp_path, processes, pubsub, app.port, "--mqtt-port", str(mqtt_port), app_id="jobs")
                for app in replicas]  # fmt: skip
    sidecars.append(_start(tmp_path, processes, pubsub, other.port, "--mqtt-port", str(mqtt_port), app_id="audit"))
    for sidecar in sidecars:
        _subscribed(sidecar)
    for n in range(40):
        assert _publish(sidecars[n % 3], "jobs", json.dumps({"n": n}).encode())[0] == 204
    wait_for(lambda: len(other.received()) == 40 and sum(len(app.received()) for app in replicas) >= 40,
             what="every message to the other app, and once to the group")
    shares = [{event["data"]["n"] for event in app.events()} for app in replicas]
    assert shares[0] | shares[1] == set(range(40)) and not shares[0] & shares[1]
    assert shares[0] and shares[1]  # both replicas work


def test_bulk_subscribe(tmp_path, processes, pubsub):
    app = SubscriberApp(tmp_path, {"subscriptions": [{
        "pubsubname": "pubsub", "topic": "many", "route": "/bulk",
        "bulkSubscribe": {"enabled": True, "maxMessagesCount": 10, "maxAwaitDurationMs": 200}}]})  # fmt: skip
    processes.append(app)
    sidecar = _start(tmp_path, processes, pubsub, app.port)
    _subscribed(sidecar)
    for n in range(25):
        assert _publish(sidecar, "many", json.dumps({"n": n}).encode())[0] == 204
    wait_for(lambda: len(app.received()) >= 25, what="25 bulk entries")
    assert sorted(e["data"]["n"] for e in app.events()) == list(range(25))
    assert max(entry["batch"] for entry in app.received()) > 1  # batches, not one POST per message


def test_in_memory_pubsub(tmp_path, processes):
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "pubsub.yaml").write_text("apiVersion: dapr.io/v1alpha1\nkind: Component\n"
                                           "metadata: {name: pubsub}\nspec: {type: pubsub.in-memory, version: v1}\n")
    app = SubscriberApp(tmp_path, {"subscriptions": [{"pubsubname": "pubsub", "topic": "t", "route": "/t"}]})
    processes.append(app)
    sidecar = _start(tmp_path, processes, resources, app.port)
    _subscribed(sidecar)
    assert _publish(sidecar, "t", b'"hello"')[0] == 204
    wait_for(lambda: app.events(), what="delivery")
    assert app.events()[0]["data"] == "hello"


def test_graceful_stop_finishes_deliveries_in_flight(tmp_path, processes, pubsub):
    """SIGTERM while the app takes 1.5 s per message: those in flight are answered, the rest wait."""
    app = SubscriberApp(tmp_path, {"subscriptions": [{"pubsubname": "pubsub", "topic": "slow", "route": "/sleep"}],
                                   "sleep_ms": 1500})
    processes.append(app)
    sidecar = _start(tmp_path, processes, pubsub, app.port, "--dapr-graceful-shutdown-seconds", "5")
    _subscribed(sidecar)
    for n in range(3):
        assert _publish(sidecar, "slow", json.dumps({"n": n}).encode())[0] == 204
    wait_for(lambda: app.started() == 3, what="deliveries under way")
    assert sidecar.stop() == 0
    assert len(app.received()) == 3  # answered before the sidecar exited


def test_plain_bytes_on_a_cloudevent_subscription_are_dropped_safely(tmp_path, processes, broker_kind, pubsub):
    app = SubscriberApp(tmp_path, {"subscriptions": [
        {"pubsubname": "pubsub", "topic": "strict", "route": "/strict", "deadLetterTopic": "strict-dead"},
        {"pubsubname": "pubsub", "topic": "strict-dead", "route": "/dead", "metadata": {"rawPayload": "true"}}]})
    processes.append(app)
    mqtt_port = free_port()
    sidecar = _start(tmp_path, processes, pubsub, app.port, "--mqtt-port", str(mqtt_port))
    _subscribed(sidecar, 2)
    broker_port = mqtt_port if broker_kind == "embedded" else int(
        (pubsub / "pubsub.yaml").read_text().split("127.0.0.1:")[1].split("'")[0])
    subprocess.run(["mosquitto_pub", "-p", str(broker_port), "-q", "1", "-t", "strict", "-m", "not json"],
                   check=True, timeout=10)
    wait_for(lambda: app.received(), what="the dead letter")
    assert [e["path"] for e in app.received()] == ["/dead"]
    assert base64.b64decode(app.events()[0]["data_base64"]) == b"not json"
    assert sidecar.alive()


def test_bad_subscription_yaml_stops_start_up(tmp_path):
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "sub.yaml").write_text("apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\n"
                                        "spec:\n  pubsubname: pubsub\n  topic: t\n  routes:\n    rules:\n"
                                        "    - {match: 'event.type ==', path: /x}\n")
    result = subprocess.run([sys.executable, "-m", "pillion", "sidecar", "--app-id", "a", "--dapr-http-port",
                             str(free_port()), "--mqtt-port", "0", "--resources-path", str(resources)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "spec.routes.rules[0].match" in result.stderr
