"""Subscriptions and delivery to the app: Dapr's pub/sub runtime on any ``PubSub`` component.

Start-up follows Dapr, with one change: nothing is taken from a broker before the app
is healthy and its subscriptions are known (daprd drops what arrives earlier). Then
``GET /dapr/subscribe`` (programmatic) and the Subscription resources (declarative)
give, per (pubsub, topic), routing rules, a dead-letter topic, raw payload and bulk
settings; each topic is subscribed once with one handler.

The handler turns a broker message into one POST to the app and the app's answer into
an ``Outcome`` (Dapr's table: 2xx SUCCESS or empty, RETRY, DROP, 404 drops, anything
else retries). A retry waits first (exponential back-off, 0.5 s doubling to 30 s); after
``DEAD_LETTER_AFTER`` attempts a subscription with a dead-letter topic sends the
message there, one without keeps it and tries again, so nothing is lost (daprd hands it
back to the component). An inbound resiliency policy on the component replaces the
back-off with its retries (the dead letter comes when they are used up) and the
delivery timeout with its timeout. DROP and unroutable messages go to the dead-letter topic when
there is one.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass, field

import orjson

from .. import cloudevents
from ..components.pubsub import Message, Outcome, PubSub, SubscribeOptions, parse_bool
from ..server.client import ClientError
from .app_channel import AppUnavailable, header_safe
from .cel import CelError
from .cel import compile as compile_cel
from .resiliency import Policy

log = logging.getLogger("pillion.runtime.pubsub")

DEAD_LETTER_AFTER = 5  # attempts before a failing message goes to the dead-letter topic
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
DELIVERY_TIMEOUT = 60.0  # seconds the app has to answer one delivery
DEFAULT_IN_FLIGHT = 32  # deliveries to the app at once per pubsub, unless --app-max-concurrency says
_CLOUDEVENTS = [(b"Content-Type", b"application/cloudevents+json")]


def _scopes(text: str | None) -> dict[str, set[str]]:
    """Dapr's ``app1=t1,t2;app2=`` lists (publishingScopes, subscriptionScopes)."""
    scopes: dict[str, set[str]] = {}
    for part in (text or "").split(";"):
        app, equals, topics = part.partition("=")
        if app.strip() and equals:  # "app" alone restricts nothing, as in daprd
            scopes[app.strip()] = {t.strip() for t in topics.split(",") if t.strip()}
    return scopes


def _topics(text: str | None) -> set[str] | None:
    if not text:
        return None
    return {t.strip() for t in text.split(",") if t.strip()}


class PubSubBinding:
    """A configured pub/sub as the runtime sees it: the component, its topic scopes, its group."""

    def __init__(self, name: str, component: PubSub, metadata: dict[str, str], app_id: str,
                 inbound: Policy | None = None) -> None:
        lowered = {k.lower(): v for k, v in metadata.items()}
        self.name = name
        self.component = component
        self.inbound = inbound  # the component's inbound resiliency policy: delivery timeout and retries
        self.delivery_timeout = inbound.timeout if inbound is not None and inbound.timeout else DELIVERY_TIMEOUT
        self.consumer_group = lowered.get("consumerid") or app_id
        self.publishing = _scopes(lowered.get("publishingscopes"))
        self.subscribing = _scopes(lowered.get("subscriptionscopes"))
        self.allowed = _topics(lowered.get("allowedtopics"))
        self.protected = _topics(lowered.get("protectedtopics")) or set()

    def may_publish(self, app_id: str, topic: str) -> bool:
        return self._granted(self.publishing, app_id, topic)

    def may_subscribe(self, app_id: str, topic: str) -> bool:
        return self._granted(self.subscribing, app_id, topic)

    def _granted(self, scopes: dict[str, set[str]], app_id: str, topic: str) -> bool:
        granted = scopes.get(app_id)
        if granted is not None:
            return topic in granted
        if topic in self.protected:
            return False
        return self.allowed is None or topic in self.allowed


@dataclass
class TopicSubscription:
    pubsubname: str
    topic: str
    rules: list[tuple[str, str]]  # (CEL match, path); "" matches everything
    default_route: str | None
    metadata: dict[str, str]
    dead_letter_topic: str | None
    bulk: dict | None
    kind: str  # DECLARATIVE or PROGRAMMATIC
    compiled: list = field(default_factory=list)  # [(Program | None, path)]

    @property
    def raw(self) -> bool:
        return parse_bool(self.metadata.get("rawPayload", "")) is True

    def compile(self) -> None:
        """Raises CelError for a bad match expression."""
        self.compiled = [(compile_cel(match) if match.strip() else None, path) for match, path in self.rules]
        if self.default_route:
            self.compiled.append((None, self.default_route))

    def route(self, event: dict) -> str | None:
        for program, path in self.compiled:
            if program is None or program.evaluate({"event": event}):
                return path
        return None

    def describe(self) -> dict:
        """The HTTP metadata API's entry, flattened as daprd flattens it."""
        rules = [{"match": match, "path": path} if match else {"path": path} for match, path in self.rules]
        if self.default_route:
            rules.append({"path": self.default_route})
        out: dict = {"pubsubname": self.pubsubname, "topic": self.topic}
        if self.metadata:
            out["metadata"] = self.metadata
        if rules:
            out["rules"] = rules
        out["deadLetterTopic"] = self.dead_letter_topic or ""
        out["type"] = self.kind
        return out


def from_json(entry) -> TopicSubscription:
    """One entry of the app's ``GET /dapr/subscribe`` answer; ValueError when unusable."""
    if not isinstance(entry, dict):
        raise ValueError("not an object")
    fields = {k.lower(): v for k, v in entry.items()}
    pubsub, topic = fields.get("pubsubname"), fields.get("topic")
    if not isinstance(pubsub, str) or not pubsub or not isinstance(topic, str) or not topic:
        raise ValueError("pubsubname and topic are required")
    rules: list[tuple[str, str]] = []
    default = fields.get("route") if isinstance(fields.get("route"), str) else None
    routes = fields.get("routes")
    if isinstance(routes, dict):
        for rule in routes.get("rules") or []:
            if isinstance(rule, dict) and isinstance(rule.get("path"), str):
                rules.append((str(rule.get("match") or ""), rule["path"]))
        if isinstance(routes.get("default"), str) and routes["default"]:
            default = routes["default"]
    if not rules and not default:
        raise ValueError("no route")
    metadata = fields.get("metadata") if isinstance(fields.get("metadata"), dict) else {}
    dead_letter = fields.get("deadlettertopic") if isinstance(fields.get("deadlettertopic"), str) else None
    bulk = fields.get("bulksubscribe") if isinstance(fields.get("bulksubscribe"), dict) else None
    return TopicSubscription(pubsub, topic, rules, default, {str(k): str(v) for k, v in metadata.items()},
                             dead_letter or None, bulk, "PROGRAMMATIC")  # fmt: skip


def from_resource(resource) -> TopicSubscription:
    return TopicSubscription(resource.pubsubname, resource.topic, list(resource.routes), resource.default_route,
                             dict(resource.metadata), resource.dead_letter_topic, resource.bulk_subscribe,
                             "DECLARATIVE")  # fmt: skip


def _outcome(status: int, body: bytes) -> Outcome:
    """Dapr's reading of the app's answer to one delivery (postman/http)."""
    if status == 404:
        return Outcome.DROP
    if not 200 <= status < 300:
        return Outcome.RETRY
    try:
        answer = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        return Outcome.SUCCESS
    if not isinstance(answer, dict):
        return Outcome.SUCCESS
    # Go matches the key case-insensitively; a non-string status fails its decode, which daprd acks.
    value = answer["status"] if "status" in answer else next(
        (v for k, v in answer.items() if k.lower() == "status"), None)
    if not isinstance(value, str) or value in ("", "SUCCESS"):
        return Outcome.SUCCESS
    return Outcome.DROP if value == "DROP" else Outcome.RETRY


def backoff(attempts: int) -> float:
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, attempts - 1))


class Subscriptions:
    """The sidecar's subscriptions: discovery, the handlers, graceful stop."""

    def __init__(self, sidecar) -> None:
        self.sidecar = sidecar
        self.active: list[TopicSubscription] = []
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.streams: dict[tuple[str, str], StreamTopic] = {}  # SubscribeTopicEventsAlpha1, by (pubsub, topic)

    def start(self) -> None:
        if self.sidecar.pubsubs and self.sidecar.app is not None:
            self._task = asyncio.get_running_loop().create_task(self._run())
            self._task.add_done_callback(_report)
        elif self.sidecar.resources.subscriptions:
            log.warning("subscriptions are declared but there is no app channel (--app-port): nothing is delivered")

    async def _run(self) -> None:
        app = self.sidecar.app
        await app.ready.wait()
        while not app.healthy:
            await asyncio.sleep(0.5)
        found = {(s.pubsubname, s.topic): s for s in await self._discover()}
        for resource in self.sidecar.resources.subscriptions:
            if not resource.scopes or self.sidecar.app_id in resource.scopes:
                found[(resource.pubsubname, resource.topic)] = from_resource(resource)
        accepted = [subscription for subscription in found.values() if self._accept(subscription)]
        by_pubsub: dict[str, set[str]] = {}
        for subscription in accepted:
            by_pubsub.setdefault(subscription.pubsubname, set()).add(subscription.topic)
        for name, binding in self.sidecar.pubsubs.items():
            options = self._options(binding)
            for subscription in accepted:
                if subscription.pubsubname == name:
                    await binding.component.subscribe(subscription.topic, self._handler(subscription, binding),
                                                      options)  # fmt: skip
            streamed = {topic for pubsub, topic in self.streams if pubsub == name}
            await binding.component.unsubscribe_others(by_pubsub.get(name, set()) | streamed, options)
        # Listed (metadata API) only once the broker has them: an app that waits for its subscriptions
        # there and then publishes must not lose the first messages to a SUBSCRIBE still in flight.
        self.active.extend(accepted)
        if self.active:
            log.info("subscribed: %s", ", ".join(f"{s.pubsubname}/{s.topic}" for s in self.active))

    def _options(self, binding: PubSubBinding) -> SubscribeOptions:
        concurrency = self.sidecar.options.app_max_concurrency
        return SubscribeOptions(group=binding.consumer_group,
                                max_in_flight=concurrency if concurrency > 0 else DEFAULT_IN_FLIGHT)

    def _accept(self, subscription: TopicSubscription) -> bool:
        binding = self.sidecar.pubsubs.get(subscription.pubsubname)
        where = f"subscription to {subscription.pubsubname}/{subscription.topic}"
        if binding is None:
            log.warning("%s: no pubsub named %r; ignored", where, subscription.pubsubname)
            return False
        if not binding.may_subscribe(self.sidecar.app_id, subscription.topic):
            log.warning("%s: not allowed for app id %r by the component's scopes; ignored", where,
                        self.sidecar.app_id)
            return False
        if (subscription.pubsubname, subscription.topic) in self.streams:
            log.warning("%s: the topic is taken by a streaming subscription; ignored", where)
            return False
        try:
            subscription.compile()
        except CelError as exc:
            log.error("%s: bad match expression: %s; ignored", where, exc)
            return False
        return True

    async def _discover(self) -> list[TopicSubscription]:
        """The app's programmatic subscriptions: 200 with a JSON array; 404 means none."""
        if self.sidecar.app.protocol == "grpc":  # ListTopicSubscriptions
            return await self.sidecar.app.list_subscriptions()
        headers = [(b"dapr-app-id", self.sidecar.app_id.encode())]
        for attempt in range(5):
            try:
                response = await self.sidecar.app.call("GET", "/dapr/subscribe", headers, b"", timeout=10.0)
                break
            except (AppUnavailable, ClientError) as exc:
                log.warning("GET /dapr/subscribe failed (%s); trying again", exc)
                await asyncio.sleep(backoff(attempt + 1))
        else:
            log.error("GET /dapr/subscribe failed five times; no programmatic subscriptions")
            return []
        if response.status == 404:
            return []
        if response.status != 200:
            log.error("GET /dapr/subscribe answered %d; no programmatic subscriptions", response.status)
            return []
        try:
            entries = orjson.loads(response.body)
        except orjson.JSONDecodeError as exc:
            log.error("GET /dapr/subscribe: not JSON (%s); no programmatic subscriptions", exc)
            return []
        if not isinstance(entries, list):
            log.error("GET /dapr/subscribe: not a JSON array; no programmatic subscriptions")
            return []
        out = []
        for index, entry in enumerate(entries):
            try:
                out.append(from_json(entry))
            except ValueError as exc:
                log.warning("GET /dapr/subscribe entry %d ignored: %s", index, exc)
        return out

    # -- delivery -----------------------------------------------------------------------

    def _handler(self, subscription: TopicSubscription, binding: PubSubBinding):
        if subscription.bulk and subscription.bulk.get("enabled"):
            return BulkDelivery(self, subscription, binding).handle

        async def handle(message: Message) -> Outcome:
            self._begin()
            try:
                return await self._deliver(subscription, binding, message)
            finally:
                self._end()

        metrics = getattr(self.sidecar, "metrics", None)
        return handle if metrics is None else metrics.pubsub_ingress(handle, binding.name, subscription.topic)

    def _begin(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def _end(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._idle.set()

    def event(self, subscription: TopicSubscription, binding: PubSubBinding, message: Message
              ) -> tuple[bytes, dict] | None:
        """The CloudEvent to deliver (bytes and parsed), or None when the message is not one."""
        if subscription.raw:
            data = cloudevents.raw(message.data, id=cloudevents.new_id(), topic=message.topic, pubsubname=binding.name)
            return data, cloudevents.parse(data)
        try:
            return message.data, cloudevents.parse(message.data)
        except cloudevents.EnvelopeError:
            return None

    async def _deliver(self, subscription: TopicSubscription, binding: PubSubBinding, message: Message) -> Outcome:
        prepared = self.event(subscription, binding, message)
        if prepared is None:
            log.error("%s/%s: a message that is not a CloudEvent (use rawPayload for plain payloads)",
                      binding.name, message.topic)
            return await self.dead_letter(subscription, binding, message, Outcome.DROP)
        body, event = prepared
        if cloudevents.expired(event, time.time()):
            log.warning("%s/%s: event %s expired; dropped", binding.name, message.topic, event.get("id"))
            return await self.dead_letter(subscription, binding, message, Outcome.DROP)
        path = subscription.route(event)
        if path is None:
            return await self.dead_letter(subscription, binding, message, Outcome.DROP)
        if self.sidecar.app.protocol == "grpc":  # OnTopicEvent; None: acked, no dead letter
            try:
                outcome = await self.sidecar.app.topic_event(event, binding.name, message.topic, path,
                                                             message.metadata, timeout=binding.delivery_timeout)
            except AppUnavailable as exc:
                log.warning("%s/%s: delivery failed: %s", binding.name, message.topic, exc)
                outcome = Outcome.RETRY
            return Outcome.DROP if outcome is None else await self.settle(subscription, binding, message, outcome)
        headers = list(_CLOUDEVENTS)
        traceparent = event.get("traceparent")
        if isinstance(traceparent, str) and traceparent:
            headers.append((b"traceparent", traceparent.encode()))
            tracestate = event.get("tracestate")
            if isinstance(tracestate, str) and tracestate:
                headers.append((b"tracestate", tracestate.encode()))
        headers.extend((k.encode(), v.encode()) for k, v in message.metadata.items() if header_safe(k, v))
        try:
            response = await self.sidecar.app.call("POST", _target(path), headers, body,
                                                   timeout=binding.delivery_timeout)
            outcome = _outcome(response.status, response.body)
            if response.status == 404:
                log.error("%s/%s: the app answered 404 for %s; message dropped", binding.name, message.topic, path)
                return Outcome.DROP
        except (AppUnavailable, ClientError) as exc:
            log.warning("%s/%s: delivery to %s failed: %s", binding.name, message.topic, path, exc)
            outcome = Outcome.RETRY
        return await self.settle(subscription, binding, message, outcome)

    async def settle(self, subscription: TopicSubscription, binding: PubSubBinding, message: Message,
                     outcome: Outcome) -> Outcome:
        """RETRY waits, then goes to the dead-letter topic once the attempts are used up."""
        if outcome is Outcome.SUCCESS:
            return outcome
        if outcome is Outcome.DROP:
            log.warning("%s/%s: the app dropped a message", binding.name, message.topic)
            return await self.dead_letter(subscription, binding, message, Outcome.DROP)
        message.attempts += 1
        retry = binding.inbound.retry if binding.inbound is not None else None
        delay = retry.delay(message.attempts) if retry is not None else None
        exhausted = delay is None if retry is not None else message.attempts >= DEAD_LETTER_AFTER
        if subscription.dead_letter_topic and exhausted:
            return await self.dead_letter(subscription, binding, message, Outcome.RETRY)
        await asyncio.sleep(backoff(message.attempts) if delay is None else delay)
        return Outcome.RETRY

    async def dead_letter(self, subscription: TopicSubscription, binding: PubSubBinding, message: Message,
                          otherwise: Outcome) -> Outcome:
        """Publish the original bytes to the dead-letter topic; ``otherwise`` when there is none."""
        topic = subscription.dead_letter_topic
        if not topic:
            return otherwise
        try:
            await binding.component.publish(topic, message.data, dict(message.metadata))
        except Exception as exc:  # the message stays unacknowledged and is tried again
            log.error("%s/%s: dead-letter publish to %s failed: %s", binding.name, message.topic, topic, exc)
            await asyncio.sleep(backoff(message.attempts + 1))
            return Outcome.RETRY
        log.warning("%s/%s: message sent to dead-letter topic %s", binding.name, message.topic, topic)
        return Outcome.SUCCESS

    # -- streaming subscriptions (gRPC SubscribeTopicEventsAlpha1) -------------------------

    async def open_stream(self, binding: PubSubBinding, topic: str, metadata: dict[str, str],
                          dead_letter_topic: str | None) -> StreamSubscriber:
        """A subscription whose deliveries go to one gRPC stream until ``close_stream``.

        The first stream on a (pubsub, topic) subscribes the component with the app's consumer
        group; later streams on it share that subscription and its messages, one each.
        Raises ValueError when the app itself subscribes the topic.
        """
        key = (binding.name, topic)
        if self._stopping:
            raise ValueError("subscriber is closed")
        if any(s.kind != "STREAMING" and (s.pubsubname, s.topic) == key for s in self.active):
            raise ValueError(f"the app already subscribes to pubsub {binding.name!r} topic {topic!r}")
        # daprd's streaming subscription: every event goes to the stream on the route "/".
        subscription = TopicSubscription(binding.name, topic, [], "/", dict(metadata), dead_letter_topic or None,
                                         None, "STREAMING")  # fmt: skip
        subscription.compile()
        stream = StreamSubscriber(subscription, binding)
        hub = self.streams.get(key)
        if hub is None:
            hub = self.streams[key] = StreamTopic(self, binding, topic)
            metrics = getattr(self.sidecar, "metrics", None)
            handle = hub.handle if metrics is None else metrics.pubsub_ingress(hub.handle, binding.name, topic)
            try:
                await binding.component.subscribe(topic, handle, self._options(binding))
            except BaseException:
                del self.streams[key]
                raise
        hub.attach(stream)
        self.active.append(subscription)
        log.info("streaming subscription to %s/%s opened", binding.name, topic)
        return stream

    def close_stream(self, stream: StreamSubscriber) -> None:
        """The stream ended: what it was sent and did not settle goes to another stream later."""
        subscription = stream.subscription
        if subscription in self.active:
            self.active.remove(subscription)
            log.info("streaming subscription to %s/%s closed", subscription.pubsubname, subscription.topic)
        hub = self.streams.get((subscription.pubsubname, subscription.topic))
        if hub is not None:
            hub.detach(stream)
        stream.close()

    async def deliver_stream(self, stream: StreamSubscriber, message: Message) -> Outcome:
        """One message to one stream, with the app delivery's expiry, retry and dead-letter rules."""
        subscription, binding = stream.subscription, stream.binding
        prepared = self.event(subscription, binding, message)
        if prepared is None:
            log.error("%s/%s: a message that is not a CloudEvent (use rawPayload for plain payloads)",
                      binding.name, message.topic)
            return await self.dead_letter(subscription, binding, message, Outcome.DROP)
        event = prepared[1]
        if cloudevents.expired(event, time.time()):
            log.warning("%s/%s: event %s expired; dropped", binding.name, message.topic, event.get("id"))
            return await self.dead_letter(subscription, binding, message, Outcome.DROP)
        outcome = await stream.deliver(event, message.topic, binding.delivery_timeout)
        if outcome is None:  # the stream closed first: redelivered, and not the subscriber's failure
            return Outcome.RETRY
        return await self.settle(subscription, binding, message, outcome)

    async def stop(self, grace: float) -> None:
        """Take no new messages; let deliveries in flight finish within ``grace`` seconds.

        Open streams can still answer during the wait; then they end, and what they did not
        settle stays with the broker.
        """
        self._stopping = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for binding in self.sidecar.pubsubs.values():
            await binding.component.stop_delivery()
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except asyncio.TimeoutError:
            log.warning("%d deliveries still in flight after %.1f s; they will be redelivered", self.in_flight, grace)
        for hub in list(self.streams.values()):
            for stream in list(hub.streams):
                self.close_stream(stream)


def _report(task: asyncio.Task) -> None:
    """A failed subscription start-up is logged, not left for the garbage collector to mention."""
    if not task.cancelled() and task.exception() is not None:
        log.error("subscribing failed: %s", task.exception(), exc_info=task.exception())


def _target(path: str) -> str:
    return path if path.startswith("/") else "/" + path



class BulkDelivery:
    """``bulkSubscribe``: messages gathered up to maxMessagesCount or maxAwaitDurationMs, one POST."""

    def __init__(self, runtime: Subscriptions, subscription: TopicSubscription, binding: PubSubBinding) -> None:
        self.runtime = runtime
        self.subscription = subscription
        self.binding = binding
        settings = {k.lower(): v for k, v in (subscription.bulk or {}).items()}
        self.max_count = max(1, int(settings.get("maxmessagescount") or 100))
        self.max_wait = max(0, int(settings.get("maxawaitdurationms") or 1000)) / 1000
        self._pending: list[tuple[Message, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None

    async def handle(self, message: Message) -> Outcome:
        self.runtime._begin()
        try:
            future = asyncio.get_running_loop().create_future()
            self._pending.append((message, future))
            if len(self._pending) >= self.max_count:
                self._flush()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.max_wait, self._flush)
            outcome = await future
            if outcome is _GONE:
                return Outcome.DROP
            return await self.runtime.settle(self.subscription, self.binding, message, outcome)
        finally:
            self.runtime._end()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            asyncio.get_running_loop().create_task(self._post(batch))

    async def _post(self, batch: list[tuple[Message, asyncio.Future]]) -> None:
        """One POST per route among the batch's events; each entry's status settles its message."""
        subscription, binding = self.subscription, self.binding
        by_path: dict[str, list[dict]] = {}
        outcomes: dict[str, Outcome] = {}
        for index, (message, _) in enumerate(batch):
            entry_id = str(index)
            prepared = self.runtime.event(subscription, binding, message)
            if prepared is not None and cloudevents.expired(prepared[1], time.time()):
                outcomes[entry_id] = Outcome.DROP
                continue
            path = subscription.route(prepared[1]) if prepared is not None else None
            if path is None:
                outcomes[entry_id] = Outcome.DROP
                continue
            event = base64.b64encode(message.data).decode() if subscription.raw else prepared[1]
            content_type = "application/octet-stream" if subscription.raw else "application/cloudevents+json"
            by_path.setdefault(path, []).append({"entryId": entry_id, "event": event, "metadata": message.metadata,
                                                 "contentType": content_type})  # fmt: skip
        for path, entries in by_path.items():
            outcomes.update(await self._post_entries(path, entries))
        for index, (_, future) in enumerate(batch):
            if not future.done():
                future.set_result(outcomes.get(str(index), Outcome.RETRY))

    async def _post_entries(self, path: str, entries: list[dict]) -> dict[str, Outcome]:
        """Dapr's bulk rules: 404 drops all, other errors retry all, a missing status retries."""
        body = orjson.dumps({"id": cloudevents.new_id(), "type": "com.dapr.event.sent.bulk",
                             "topic": self.subscription.topic, "pubsubname": self.binding.name, "metadata": {},
                             "entries": entries})  # fmt: skip
        try:
            response = await self.runtime.sidecar.app.call("POST", _target(path),
                                                           [(b"Content-Type", b"application/json")], body,
                                                           timeout=self.binding.delivery_timeout)  # fmt: skip
        except (AppUnavailable, ClientError):
            return {entry["entryId"]: Outcome.RETRY for entry in entries}
        if response.status == 404:  # dropped, never dead-lettered (as daprd)
            return {entry["entryId"]: _GONE for entry in entries}
        answered = dict(_statuses(response.body)) if 200 <= response.status < 300 else {}
        return {entry["entryId"]: answered.get(entry["entryId"], Outcome.RETRY) for entry in entries}


_GONE = object()  # a bulk entry the app answered 404 for: dropped without a dead letter


def _statuses(body: bytes) -> list[tuple[str, Outcome]]:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    out = []
    for item in (answer.get("statuses") if isinstance(answer, dict) else None) or []:
        if isinstance(item, dict) and isinstance(item.get("entryId"), str):
            status = item.get("status")
            out.append((item["entryId"], {"SUCCESS": Outcome.SUCCESS, "DROP": Outcome.DROP}.get(status,
                                                                                            Outcome.RETRY)))
    return out


STREAM_WAIT = 1.0  # seconds a message waits for a stream before the component hands it over again


class StreamTopic:
    """The component subscription behind the streams on one (pubsub, topic).

    The component has no way to drop one topic, so the subscription outlives its streams:
    a message that arrives while no stream is open stays unacknowledged with the broker (in
    the embedded broker's session, on disk) and goes to the next stream that opens.
    """

    def __init__(self, runtime: Subscriptions, binding: PubSubBinding, topic: str) -> None:
        self.runtime = runtime
        self.binding = binding
        self.topic = topic
        self.streams: list[StreamSubscriber] = []
        self._attached = asyncio.Event()
        self._turn = 0

    def attach(self, stream: StreamSubscriber) -> None:
        self.streams.append(stream)
        self._attached.set()

    def detach(self, stream: StreamSubscriber) -> None:
        if stream in self.streams:
            self.streams.remove(stream)
        if not self.streams:
            self._attached.clear()

    async def handle(self, message: Message) -> Outcome:
        if not self.streams:
            try:
                await asyncio.wait_for(self._attached.wait(), STREAM_WAIT)
            except TimeoutError:
                return Outcome.RETRY
            if not self.streams:
                return Outcome.RETRY
        self._turn = (self._turn + 1) % len(self.streams)
        stream = self.streams[self._turn]
        self.runtime._begin()
        try:
            return await self.runtime.deliver_stream(stream, message)
        finally:
            self.runtime._end()


class StreamSubscriber:
    """One open stream: events leave through ``outbox``, the client's answers come in through ``answer``.

    ``outbox`` holds (CloudEvent, topic) pairs; ``None`` means the stream is over.
    """

    def __init__(self, subscription: TopicSubscription, binding: PubSubBinding) -> None:
        self.subscription = subscription
        self.binding = binding
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.closed = False
        self._waiting: dict[str, asyncio.Future] = {}  # event id -> the answer

    async def deliver(self, event: dict, topic: str, timeout: float) -> Outcome | None:
        """The client's answer; RETRY when it takes longer than ``timeout``; None when the stream closed."""
        event_id = str(event.get("id", ""))
        while event_id in self._waiting and not self.closed:  # the same id in flight: answers could not be told apart
            await asyncio.wait({self._waiting[event_id]})
        if self.closed:
            return None
        future = asyncio.get_running_loop().create_future()
        self._waiting[event_id] = future
        self.outbox.put_nowait((event, topic))
        try:
            done, _ = await asyncio.wait({future}, timeout=timeout)
        finally:
            if self._waiting.get(event_id) is future:
                del self._waiting[event_id]
            if not future.done():
                future.set_result(None)
        if not done:
            log.warning("%s/%s: the stream did not answer for event %s within %.0f s", self.binding.name, topic,
                        event_id, timeout)
            return Outcome.RETRY
        return future.result()

    def answer(self, event_id: str, outcome: Outcome) -> None:
        """An answer for an id not in flight (late, or never sent) is ignored, as daprd ignores it."""
        future = self._waiting.get(event_id)
        if future is not None and not future.done():
            future.set_result(outcome)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for future in self._waiting.values():
            if not future.done():
                future.set_result(None)
        self.outbox.put_nowait(None)
