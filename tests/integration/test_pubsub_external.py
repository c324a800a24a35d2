"""``ExternalMqtt`` against a real Mosquitto: delivery, at-least-once, sessions, sharing, restarts."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from pillion._testing import free_port
from pillion.components.pubsub import Message, Outcome, PublishError, SubscribeOptions
from pillion.components.pubsub.mqtt_external import ExternalMqtt, parse_settings
from pillion.config.manifests import Component, MetadataItem, Source
from pillion.errors import ConfigError

from _mqtt import MOSQUITTO, Mosquitto

# `make test` installs them; under CI a missing one must fail, not skip.
pytestmark = pytest.mark.skipif((not Path(MOSQUITTO).exists() or not shutil.which("mosquitto_sub"))
                                and not os.environ.get("CI"), reason="needs mosquitto and mosquitto-clients")


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(tmp_path)
    yield broker
    broker.stop()


def component(*items: tuple[str, str]) -> Component:
    metadata = tuple(MetadataItem(name, value) for name, value in items)
    return Component("pubsub", None, "pubsub.mqtt3", "v1", metadata, (), "5s", False, None,
                     Source("components/pubsub.yaml", 0))


def external(broker: Mosquitto, client_id: str, *items: tuple[str, str], **timing) -> ExternalMqtt:
    settings = parse_settings(component(("url", f"tcp://127.0.0.1:{broker.port}"), *items),
                              default_consumer_id="app")
    timing.setdefault("reconnect_delay", (1, 2))
    return ExternalMqtt(settings, client_id, **timing)


async def until(check, timeout: float = 4.0, what: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Recorder:
    """A handler that records messages and answers from a script of outcomes (then SUCCESS)."""

    def __init__(self, *outcomes: Outcome):
        self.outcomes = list(outcomes)
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> Outcome:
        self.messages.append(message)
        if self.outcomes:
            outcome = self.outcomes.pop(0)
            if outcome is Outcome.RETRY:
                await asyncio.sleep(0.05)
            return outcome
        return Outcome.SUCCESS

    def payloads(self) -> list[bytes]:
        return [m.data for m in self.messages]


GROUP = SubscribeOptions(group="app")


def unique_topic() -> str:
    return f"orders/{uuid.uuid4().hex[:8]}"


def test_publish_reaches_mosquitto_sub_byte_for_byte(mosquitto):
    topic, data = unique_topic(), b"\x00\xff binary \n\r payload"
    session = ["mosquitto_sub", "-p", str(mosquitto.port), "-i", "cli-sub", "-c", "-q", "1", "-t", topic]
    subprocess.run([*session, "-E"], check=True, timeout=5)  # the session holds what we publish next

    async def scenario():
        pubsub = external(mosquitto, "pub-only")
        await pubsub.start()
        await pubsub.publish(topic, data, {})
        await pubsub.close()

    asyncio.run(scenario())
    received = subprocess.run([*session, "-C", "1", "-F", "%x"], capture_output=True, text=True, timeout=5)
    assert received.stdout.strip() == data.hex()


def test_mosquitto_pub_reaches_the_handler(mosquitto, tmp_path):
    topic, data = unique_topic(), b"\x01\x02 from mosquitto_pub"
    (tmp_path / "payload").write_bytes(data)

    async def scenario():
        pubsub = external(mosquitto, "sub-1")
        await pubsub.start()
        handler = Recorder()
        await pubsub.subscribe(topic, handler, GROUP)
        proc = await asyncio.create_subprocess_exec("mosquitto_pub", "-p", str(mosquitto.port), "-t", topic,
                                                    "-q", "1", "-f", str(tmp_path / "payload"))
        assert await proc.wait() == 0
        await until(lambda: handler.messages, what="message")
        await pubsub.close()
        return handler.messages

    [message] = asyncio.run(scenario())
    assert (message.topic, message.data, message.redelivered) == (topic, data, False)
    assert message.metadata == {"retained": "false"}


def test_retry_until_success_then_acked_once(mosquitto):
    topic = unique_topic()

    async def scenario():
        pubsub = external(mosquitto, "sub-retry")
        await pubsub.start()
        handler = Recorder(Outcome.RETRY, Outcome.RETRY)
        await pubsub.subscribe(topic, handler, GROUP)
        await pubsub.publish(topic, b"once", {})
        await until(lambda: len(handler.messages) == 3, what="three calls")
        await pubsub.close()

        again = external(mosquitto, "sub-retry")
        await again.start()
        later = Recorder()
        await again.subscribe(topic, later, GROUP)
        await asyncio.sleep(0.5)
        await again.close()
        return handler.messages, later.messages

    calls, after_reconnect = asyncio.run(scenario())
    assert [m.data for m in calls] == [b"once"] * 3
    assert [m.redelivered for m in calls] == [False, True, True]
    assert after_reconnect == []


def test_unaccepted_message_comes_back_to_the_next_run(mosquitto):
    topic = unique_topic()

    async def scenario():
        pubsub = external(mosquitto, "sub-keep")
        await pubsub.start()
        refusing = Recorder(*[Outcome.RETRY] * 1000)
        await pubsub.subscribe(topic, refusing, GROUP)
        await pubsub.publish(topic, b"not yet", {})
        await until(lambda: refusing.messages, what="first delivery")
        await pubsub.close()

        again = external(mosquitto, "sub-keep")
        await again.start()
        accepting = Recorder()
        await again.subscribe(topic, accepting, GROUP)
        await until(lambda: accepting.messages, what="redelivery")
        await again.close()
        return accepting.messages

    [message] = asyncio.run(scenario())
    assert (message.data, message.redelivered) == (b"not yet", True)


def test_messages_published_while_away_arrive_in_order(mosquitto):
    topic = unique_topic()

    async def scenario():
        subscriber = external(mosquitto, "sub-away")
        await subscriber.start()
        await subscriber.subscribe(topic, Recorder(), GROUP)
        await subscriber.close()

        publisher = external(mosquitto, "publisher")
        await publisher.start()
        for n in range(5):
            await publisher.publish(topic, f"m{n}".encode(), {})
        await publisher.close()

        back = external(mosquitto, "sub-away")
        await back.start()
        handler = Recorder()
        await back.subscribe(topic, handler, SubscribeOptions(group="app", max_in_flight=1))
        await until(lambda: len(handler.messages) == 5, what="five queued messages")
        await back.close()
        return handler.payloads()

    assert asyncio.run(scenario()) == [f"m{n}".encode() for n in range(5)]


def test_waiting_messages_for_dropped_topics_are_acked_after_unsubscribe_others(mosquitto):
    kept, dropped = unique_topic(), unique_topic()

    async def scenario():
        first = external(mosquitto, "sub-others")
        await first.start()
        await first.subscribe(kept, Recorder(), GROUP)
        await first.subscribe(dropped, Recorder(), GROUP)
        await first.close()

        publisher = external(mosquitto, "publisher")
        await publisher.start()
        await publisher.publish(dropped, b"stale", {})
        await publisher.publish(kept, b"fresh", {})
        await publisher.close()

        second = external(mosquitto, "sub-others")
        await second.start()
        handler = Recorder()
        await second.subscribe(kept, handler, GROUP)
        await second.unsubscribe_others({kept}, GROUP)
        await until(lambda: handler.messages, what="kept topic")
        await asyncio.sleep(0.2)
        await second.close()

        third = external(mosquitto, "sub-others")
        await third.start()
        late = Recorder()
        await third.subscribe(dropped, late, GROUP)
        await asyncio.sleep(0.5)
        await third.close()
        return handler.payloads(), late.payloads()

    assert asyncio.run(scenario()) == ([b"fresh"], [])


def test_shared_group_gives_each_message_to_one_member(mosquitto):
    topic = unique_topic()

    async def scenario():
        members = [external(mosquitto, f"member-{n}") for n in range(2)]
        handlers = [Recorder(), Recorder()]
        for member, handler in zip(members, handlers):
            await member.start()
            await member.subscribe(topic, handler, SubscribeOptions(group="workers"))
        for n in range(20):
            await members[0].publish(topic, str(n).encode(), {})
        await until(lambda: sum(len(h.messages) for h in handlers) >= 20, what="20 deliveries")
        await asyncio.sleep(0.3)
        for member in members:
            await member.close()
        return [h.payloads() for h in handlers]

    first, second = asyncio.run(scenario())
    assert sorted(first + second, key=int) == [str(n).encode() for n in range(20)]
    assert not set(first) & set(second)


def test_broker_restart_reconnects_and_resubscribes(mosquitto):
    topic = unique_topic()

    async def scenario():
        pubsub = external(mosquitto, "sub-restart", connect_wait=0.5)
        await pubsub.start()
        handler = Recorder()
        await pubsub.subscribe(topic, handler, GROUP)
        await pubsub.publish(topic, b"before", {})
        await until(lambda: handler.messages, what="first message")

        mosquitto.kill()  # SIGKILL: the broker forgets the session, so it must be subscribed again
        await until(lambda: not pubsub.ready, what="disconnect noticed")
        with pytest.raises(PublishError, match="not connected"):
            await pubsub.publish(topic, b"during", {})

        await asyncio.to_thread(mosquitto.start)
        await until(lambda: pubsub.ready, what="reconnect and resubscribe")
        await pubsub.publish(topic, b"after", {})
        await until(lambda: len(handler.messages) == 2, what="message after restart")
        await pubsub.close()
        return handler.payloads()

    assert asyncio.run(scenario()) == [b"before", b"after"]


def test_mqtt5_publish_with_ttl_and_shared_subscription(mosquitto):
    topic = unique_topic()

    async def scenario():
        pubsub = external(mosquitto, "sub-v5", ("protocolVersion", "5"))
        assert "MESSAGE_TTL" in pubsub.features
        await pubsub.start()
        handler = Recorder()
        await pubsub.subscribe(topic, handler, GROUP)
        await pubsub.publish(topic, b"v5", {"ttlInSeconds": "60"})
        await until(lambda: handler.messages, what="v5 message")
        await pubsub.close()
        return handler.payloads()

    assert asyncio.run(scenario()) == [b"v5"]


def test_close_is_quick_when_the_broker_is_unreachable():
    async def scenario():
        settings = parse_settings(component(("url", f"tcp://127.0.0.1:{free_port()}")), default_consumer_id="app")
        pubsub = ExternalMqtt(settings, "nobody", connect_wait=0.3, close_wait=2)
        await pubsub.start()
        with pytest.raises(PublishError):
            await pubsub.publish("t", b"x", {})
        started = asyncio.get_running_loop().time()
        await pubsub.close()
        return asyncio.get_running_loop().time() - started

    assert asyncio.run(scenario()) < 2.5


def test_settings_from_dapr_metadata():
    settings = parse_settings(component(("url", "mqtts://user:p%40ss@broker.local"), ("qos", "2"),
                                        ("retain", "true"), ("consumerID", "orders"), ("backOffMaxRetries", "3"),
                                        ("somethingElse", "x")), default_consumer_id="app")
    assert (settings.host, settings.port, settings.tls) == ("broker.local", 8883, True)
    assert (settings.username, settings.password) == ("user", "p@ss")
    assert (settings.qos, settings.retain, settings.clean_session, settings.consumer_id) == (2, True, False, "orders")
    defaults = parse_settings(component(), default_url="tcp://h", default_consumer_id="app")
    assert (defaults.port, defaults.qos, defaults.consumer_id, defaults.tls) == (1883, 1, "app", False)


@pytest.mark.parametrize("items, field", [
    ((("url", "ws://h:8080"),), "spec.metadata[0].url"),
    ((("url", "tcp://h"), ("qos", "3")), "spec.metadata[1].qos"),
    ((("url", "tcp://h"), ("cleanSession", "maybe")), "spec.metadata[1].cleanSession"),
    ((("url", "tcp://h"), ("retain", "sometimes")), "spec.metadata[1].retain"),
    ((("url", "tcp://h"), ("protocolVersion", "4.0")), "spec.metadata[1].protocolVersion"),
    ((("url", "ssl://h"), ("caCert", "not a certificate")), "spec.metadata[1].caCert"),
    ((("url", "ssl://h"), ("clientCert", "-----BEGIN CERTIFICATE-----")), "spec.metadata.clientkey"),
    ((("url", "tcp://h:99999"),), "spec.metadata[0].url"),
])
def test_bad_metadata_names_the_field(items, field):
    with pytest.raises(ConfigError) as caught:
        parse_settings(component(*items), default_consumer_id="app")
    assert caught.value.field == field
