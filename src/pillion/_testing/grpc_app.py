"""A gRPC app written with the official SDK's ``dapr.ext.grpc.App``, for --app-protocol grpc tests.

``python -m pillion._testing.grpc_app PORT RECORD_FILE``: every invocation, topic event
and binding event it sees is appended to RECORD_FILE as one JSON line, so a test reads
what arrived without calling the app (which may be made unhealthy on purpose).

* methods: ``echo`` (the body back, with a response header), ``boom`` (raises: gRPC Unknown);
  any other method answers Unimplemented (the SDK's rule);
* topics on ``pubsub``: ``orders`` (SUCCESS), ``flaky`` (RETRY the first time per event
  id, then SUCCESS), ``junk`` (DROP), ``raw`` (rawPayload subscription);
* input binding ``devices``;
* HealthCheck fails while the file RECORD_FILE + ".sick" exists.
"""

from __future__ import annotations

import json
import os
import sys
import threading

from dapr.ext.grpc import (
    App,
    InvokeMethodRequest,
    InvokeMethodResponse,
    TopicEventResponse,
)

_lock = threading.Lock()


def main() -> None:
    port, record = int(sys.argv[1]), sys.argv[2]
    app = App()
    seen: set[str] = set()

    def write(entry: dict) -> None:
        with _lock, open(record, "a") as out:
            out.write(json.dumps(entry) + "\n")

    @app.method(name="echo")
    def echo(request: InvokeMethodRequest) -> InvokeMethodResponse:
        metadata = {key: value for key, value in request.get_metadata() if isinstance(value, str)}
        write({"kind": "invoke", "method": "echo", "body": request.text(), "content_type": request.content_type,
               "metadata": metadata})
        return InvokeMethodResponse(b"echo:" + request.data, "text/plain", headers=(("x-echo", "yes"),))

    @app.method(name="boom")
    def boom(request: InvokeMethodRequest):
        raise ValueError("boom went the app")

    def topic_record(topic: str, event) -> dict:
        data = event.data
        return {"kind": "topic", "topic": topic, "id": event.id,
                "data": data.decode() if isinstance(data, bytes) else data,
                "content_type": event.content_type, "extensions": {k: v for k, v in event.extensions.items()
                                                                   if isinstance(v, (str, int, float, bool))}}

    @app.subscribe(pubsub_name="pubsub", topic="orders")
    def orders(event) -> None:
        write(topic_record("orders", event))

    @app.subscribe(pubsub_name="pubsub", topic="flaky")
    def flaky(event) -> TopicEventResponse:
        entry = topic_record("flaky", event)
        first = event.id not in seen
        seen.add(event.id)
        entry["answer"] = "retry" if first else "success"
        write(entry)
        return TopicEventResponse(entry["answer"])

    @app.subscribe(pubsub_name="pubsub", topic="junk")
    def junk(event) -> TopicEventResponse:
        write(topic_record("junk", event))
        return TopicEventResponse("drop")

    @app.subscribe(pubsub_name="pubsub", topic="raw", metadata={"rawPayload": "true"})
    def raw(event) -> None:
        write(topic_record("raw", event))

    @app.binding("devices")
    def devices(request) -> None:
        write({"kind": "binding", "name": "devices", "data": request.text(),
               "metadata": dict(request.binding_metadata)})

    def health() -> None:
        if os.path.exists(record + ".sick"):
            raise RuntimeError("sick on purpose")

    app.register_health_check(health)
    app.run(port, "127.0.0.1")


if __name__ == "__main__":
    main()
