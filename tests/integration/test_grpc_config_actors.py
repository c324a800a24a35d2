"""Configuration and actors over the gRPC front: the SDK's DaprClient, raw stubs, mixed with HTTP."""

from __future__ import annotations

import json
import threading
import time

import pytest
from _grpc import dapr_client, grpc_sidecar
from _http import json_request, request
from test_actors import STATE, ActorApp
from test_configuration import STORE, pillion_config

from pillion._testing import free_port, wait_for

# Without the grpc extra _grpc has skipped the module already; these name what is needed.
grpc = pytest.importorskip("grpc")
actors_pb2 = pytest.importorskip("dapr.proto.runtime.v1.actors_pb2")
configuration_pb2 = pytest.importorskip("dapr.proto.runtime.v1.configuration_pb2")
dapr_pb2_grpc = pytest.importorskip("dapr.proto.runtime.v1.dapr_pb2_grpc")
any_pb2 = pytest.importorskip("google.protobuf.any_pb2")
error_details_pb2 = pytest.importorskip("google.rpc.error_details_pb2")
status_pb2 = pytest.importorskip("google.rpc.status_pb2")


@pytest.fixture
def resources(tmp_path):
    folder = tmp_path / "resources"
    folder.mkdir()
    (folder / "configstore.yaml").write_text(STORE)
    (folder / "state.yaml").write_text(STATE)
    return folder


def _stub(port: int):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, dapr_pb2_grpc.DaprStub(channel)


def _error(call) -> tuple[grpc.StatusCode, str, str]:
    """(status code, message, ErrorInfo reason) of a failing call."""
    with pytest.raises(grpc.RpcError) as failed:
        call()
    err = failed.value
    status = status_pb2.Status.FromString(dict(err.trailing_metadata())["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.domain == "dapr.io"
    return err.code(), err.details(), info.reason


def _both_fronts_serve(sc) -> None:
    assert request(sc.http_port, "GET", "/v1.0/healthz")[0] == 204
    with dapr_client(sc) as client:
        assert client.get_metadata().application_id


# -- configuration ---------------------------------------------------------------------------


def test_sdk_gets_what_the_cli_wrote(tmp_path, sidecar, resources):
    assert pillion_config(tmp_path, resources, "set", "--metadata", "owner=ops",
                          "motor.speed=1200", "motor.mode=eco").returncode == 0
    sc = grpc_sidecar(sidecar, "cfg-reader", "--resources-path", str(resources))
    with dapr_client(sc) as client:
        one = client.get_configuration("configstore", ["motor.speed"])
        every = client.get_configuration("configstore", [])
        absent = client.get_configuration("configstore", ["absent"])
    item = one.items["motor.speed"]
    assert (item.value, dict(item.metadata)) == ("1200", {"owner": "ops"}) and item.version.isdigit()
    assert list(one.items) == ["motor.speed"]
    assert {k: v.value for k, v in every.items.items()} == {"motor.speed": "1200", "motor.mode": "eco"}
    assert dict(absent.items) == {}
    # The same item, version included, over HTTP; and the Alpha1 name answers the same.
    _, _, body = json_request(sc.http_port, "GET", "/v1.0/configuration/configstore?key=motor.speed")
    assert body["motor.speed"]["version"] == item.version
    channel, stub = _stub(sc.grpc_port)
    with channel:
        alpha = stub.GetConfigurationAlpha1(
            configuration_pb2.GetConfigurationRequest(store_name="configstore", keys=["motor.mode"]), timeout=10)
    assert alpha.items["motor.mode"].value == "eco"


def test_sdk_subscription_gets_cli_changes_until_unsubscribed(tmp_path, sidecar, resources):
    sc = grpc_sidecar(sidecar, "cfg-watcher", "--resources-path", str(resources))
    received: list[tuple[str, dict]] = []

    def handler(subscription_id, response):
        received.append((subscription_id, {k: v.value for k, v in response.items.items()}))

    with dapr_client(sc) as client:
        subscription = client.subscribe_configuration("configstore", ["motor.speed", "motor.mode"], handler)
        assert subscription
        assert pillion_config(tmp_path, resources, "set", "motor.speed=900", "fan=on").returncode == 0
        wait_for(lambda: received, what="the first update on the stream")
        assert received[0] == (subscription, {"motor.speed": "900"})  # fan is not subscribed to

        assert pillion_config(tmp_path, resources, "set", "motor.speed=1000", "motor.mode=boost").returncode == 0
        wait_for(lambda: len(received) == 2, what="the second update")
        assert received[1] == (subscription, {"motor.speed": "1000", "motor.mode": "boost"})  # one message

        assert client.unsubscribe_configuration("configstore", subscription) is True
        assert pillion_config(tmp_path, resources, "set", "motor.speed=1").returncode == 0
        time.sleep(1.0)  # ten poll intervals
        assert len(received) == 2
        assert client.unsubscribe_configuration("configstore", subscription) is False  # gone already
    # What the streams saw is what the store holds.
    _, _, body = json_request(sc.http_port, "GET", "/v1.0/configuration/configstore?key=motor.speed")
    assert body["motor.speed"]["value"] == "1"


def test_cancelling_the_stream_ends_the_subscription(tmp_path, sidecar, resources):
    sc = grpc_sidecar(sidecar, "cfg-cancel", "--resources-path", str(resources))
    channel, stub = _stub(sc.grpc_port)
    with channel:
        stream = stub.SubscribeConfigurationAlpha1(
            configuration_pb2.SubscribeConfigurationRequest(store_name="configstore", keys=["k"]), timeout=30)
        first = next(stream)
        assert first.id and not first.items
        assert pillion_config(tmp_path, resources, "set", "k=v1").returncode == 0
        update = next(stream)
        assert (update.id, update.items["k"].value) == (first.id, "v1")
        stream.cancel()
        # The server dropped it: UnsubscribeConfiguration no longer knows the id.
        def forgotten():
            answer = stub.UnsubscribeConfiguration(
                configuration_pb2.UnsubscribeConfigurationRequest(store_name="configstore", id=first.id))
            return not answer.ok

        wait_for(forgotten, what="the cancelled subscription to end")
        answer = stub.UnsubscribeConfiguration(
            configuration_pb2.UnsubscribeConfigurationRequest(store_name="configstore", id="no-such-id"), timeout=10)
        assert (answer.ok, answer.message) == (
            False, "failed to unsubscribe to configuration request no-such-id: subscription does not exist")
        # An UnsubscribeConfiguration ends a stream: the iterator finishes with OK.
        stream = stub.SubscribeConfiguration(
            configuration_pb2.SubscribeConfigurationRequest(store_name="configstore", keys=[]), timeout=30)
        sid = next(stream).id
        assert stub.UnsubscribeConfigurationAlpha1(
            configuration_pb2.UnsubscribeConfigurationRequest(store_name="configstore", id=sid), timeout=10).ok
        assert list(stream) == [] and stream.code() == grpc.StatusCode.OK
        _both_fronts_serve(sc)
        # A stream still open at shutdown ends at once (OK, as daprd) instead of holding the 5 s grace.
        stream = stub.SubscribeConfiguration(
            configuration_pb2.SubscribeConfigurationRequest(store_name="configstore", keys=[]), timeout=30)
        assert next(stream).id
        started = time.monotonic()
        assert sc.stop() == 0 and time.monotonic() - started < 3
        assert list(stream) == [] and stream.code() == grpc.StatusCode.OK


def test_configuration_bad_input(tmp_path, sidecar, resources):
    sc = grpc_sidecar(sidecar, "cfg-bad", "--resources-path", str(resources))
    bare = grpc_sidecar(sidecar, "cfg-none")  # the default resources: no configuration store
    channel, stub = _stub(sc.grpc_port)
    bare_channel, bare_stub = _stub(bare.grpc_port)
    with channel, bare_channel:
        get = configuration_pb2.GetConfigurationRequest(store_name="nope", keys=["k"])
        assert _error(lambda: stub.GetConfiguration(get, timeout=10)) == (
            grpc.StatusCode.INVALID_ARGUMENT, "configuration store nope not found", "ERR_CONFIGURATION_STORE_NOT_FOUND")
        subscribe = configuration_pb2.SubscribeConfigurationRequest(store_name="nope", keys=["k"])
        assert _error(lambda: next(stub.SubscribeConfiguration(subscribe, timeout=10))) == (
            grpc.StatusCode.INVALID_ARGUMENT, "configuration store nope not found", "ERR_CONFIGURATION_STORE_NOT_FOUND")
        assert _error(lambda: bare_stub.GetConfiguration(get, timeout=10)) == (
            grpc.StatusCode.FAILED_PRECONDITION, "configuration stores not configured",
            "ERR_CONFIGURATION_STORE_NOT_CONFIGURED")
        with dapr_client(sc) as client, pytest.raises(grpc.RpcError) as sdk_error:
            client.get_configuration("nope", ["k"])
        assert sdk_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status, _, body = json_request(sc.http_port, "GET", "/v1.0/configuration/nope?key=k")
    assert (status, body["errorCode"]) == (400, "ERR_CONFIGURATION_STORE_NOT_FOUND")
    _both_fronts_serve(sc)
    _both_fronts_serve(bare)


# -- actors ----------------------------------------------------------------------------------


@pytest.fixture
def actor_sidecar(tmp_path, sidecar, processes, resources):
    """An actor app hosting Counter and its sidecar with gRPC: (app, sidecar)."""
    http_port = free_port()
    app = ActorApp(tmp_path, http_port, {"entities": ["Counter"]})
    processes.append(app)
    sc = grpc_sidecar(sidecar, "actors", "--resources-path", str(resources), "--app-port", str(app.port),
                      http_port=http_port)  # fmt: skip
    wait_for(lambda: json_request(http_port, "GET", "/v1.0/metadata")[2]["actorRuntime"]["runtimeStatus"]
             == "RUNNING", what="actor runtime")  # fmt: skip
    return app, sc


def _op(kind: str, key: str, value: bytes | None = None):
    op = actors_pb2.TransactionalActorStateOperation(operationType=kind, key=key)
    if value is not None:
        op.value.CopyFrom(any_pb2.Any(value=value))
    return op


def test_invoke_and_state_across_both_fronts(actor_sidecar):
    app, sc = actor_sidecar
    channel, stub = _stub(sc.grpc_port)
    with channel:
        # The app's `add` reads and writes the state over HTTP; the call comes over gRPC.
        answer = stub.InvokeActor(actors_pb2.InvokeActorRequest(actor_type="Counter", actor_id="c1", method="add",
                                                                data=b"5"), timeout=10)  # fmt: skip
        assert answer.data == b"5"
        call = app.entries()[-1]
        assert (call["type"], call["id"], call["method"], call["body"]) == ("Counter", "c1", "add", "5")
        state = stub.GetActorState(actors_pb2.GetActorStateRequest(actor_type="Counter", actor_id="c1", key="count"),
                                   timeout=10)  # fmt: skip
        assert state.data == b"5"

        # A gRPC transaction stores the bytes as given; HTTP and the app read them.
        stub.ExecuteActorStateTransaction(actors_pb2.ExecuteActorStateTransactionRequest(
            actor_type="Counter", actor_id="c1",
            operations=[_op("upsert", "count", b"10"), _op("upsert", "greeting", b'"hello"')]), timeout=10)
        status, _, body = request(sc.http_port, "GET", "/v1.0/actors/Counter/c1/state/greeting")
        assert (status, body) == (200, b'"hello"')
        status, _, body = request(sc.http_port, "PUT", "/v1.0/actors/Counter/c1/method/add", b"1")
        assert (status, body) == (200, b"11")
        assert stub.GetActorState(actors_pb2.GetActorStateRequest(actor_type="Counter", actor_id="c1", key="count"),
                                  timeout=10).data == b"11"  # fmt: skip

        # An HTTP transaction (JSON values) read over gRPC; a gRPC delete seen over HTTP.
        assert request(sc.http_port, "POST", "/v1.0/actors/Counter/c1/state",
                       json.dumps([{"operation": "upsert", "request": {"key": "list", "value": [1, 2]}}]))[0] == 204
        assert stub.GetActorState(actors_pb2.GetActorStateRequest(actor_type="Counter", actor_id="c1", key="list"),
                                  timeout=10).data == b"[1,2]"  # fmt: skip
        stub.ExecuteActorStateTransaction(actors_pb2.ExecuteActorStateTransactionRequest(
            actor_type="Counter", actor_id="c1", operations=[_op("delete", "greeting")]), timeout=10)
        assert request(sc.http_port, "GET", "/v1.0/actors/Counter/c1/state/greeting")[0] == 204
        missing = stub.GetActorState(actors_pb2.GetActorStateRequest(actor_type="Counter", actor_id="c1",
                                                                     key="greeting"), timeout=10)  # fmt: skip
        assert missing.data == b""

        # The SDK's actor-error convention (200 + X-DaprErrorResponseHeader) gives its body.
        failed = stub.InvokeActor(actors_pb2.InvokeActorRequest(actor_type="Counter", actor_id="c2", method="fail"),
                                  timeout=10)  # fmt: skip
        assert json.loads(failed.data) == {"message": "it failed"}


def test_reminders_and_timers_fire_and_stop(actor_sidecar):
    app, sc = actor_sidecar
    channel, stub = _stub(sc.grpc_port)

    def fires(method: str) -> list[dict]:
        return [c for c in app.entries() if c["method"] == method]

    with channel:
        stub.RegisterActorReminder(actors_pb2.RegisterActorReminderRequest(
            actor_type="Counter", actor_id="r1", name="ping", due_time="0s", period="500ms", data=b'{"x": 1}'),
            timeout=10)
        stub.RegisterActorTimer(actors_pb2.RegisterActorTimerRequest(
            actor_type="Counter", actor_id="t1", name="tick", due_time="0s", period="500ms", callback="onTick",
            data=b'"d"'), timeout=10)
        wait_for(lambda: len(fires("remind/ping")) >= 2 and len(fires("timer/tick")) >= 2, timeout=10,
                 what="two reminder and two timer fires")
        reminder = json.loads(fires("remind/ping")[0]["body"])
        assert reminder["data"] == {"x": 1} and reminder["period"] == "500ms"
        tick = json.loads(fires("timer/tick")[0]["body"])
        assert (tick["callback"], tick["data"]) == ("onTick", "d")
        # The reminder is the HTTP API's too.
        status, _, body = json_request(sc.http_port, "GET", "/v1.0/actors/Counter/r1/reminders/ping")
        assert status == 200 and body["period"] == "500ms" and body["data"] == {"x": 1}

        stub.UnregisterActorReminder(actors_pb2.UnregisterActorReminderRequest(
            actor_type="Counter", actor_id="r1", name="ping"), timeout=10)
        stub.UnregisterActorTimer(actors_pb2.UnregisterActorTimerRequest(
            actor_type="Counter", actor_id="t1", name="tick"), timeout=10)
        time.sleep(0.3)  # a fire already under way may still land
        reminders, ticks = len(fires("remind/ping")), len(fires("timer/tick"))
        time.sleep(1.5)
        assert (len(fires("remind/ping")), len(fires("timer/tick"))) == (reminders, ticks)
        assert json_request(sc.http_port, "GET", "/v1.0/actors/Counter/r1/reminders/ping")[2] == {}


def test_actor_bad_input(actor_sidecar):
    _, sc = actor_sidecar
    channel, stub = _stub(sc.grpc_port)
    with channel:
        invoke = actors_pb2.InvokeActorRequest(actor_type="Nope", actor_id="x", method="m")
        assert _error(lambda: stub.InvokeActor(invoke, timeout=10)) == (
            grpc.StatusCode.INTERNAL, "error invoke actor method: did not find address for actor Nope/x",
            "ERR_ACTOR_INVOKE_METHOD")

        def remind(**fields):
            request_ = actors_pb2.RegisterActorReminderRequest(actor_type="Counter", actor_id="x", name="r")
            for name, value in fields.items():
                setattr(request_, name, value)
            return lambda: stub.RegisterActorReminder(request_, timeout=10)

        assert _error(remind(period="soon")) == (
            grpc.StatusCode.INTERNAL,
            "error creating actor reminder: invalid reminder period: parse error: unsupported duration format: soon",
            "ERR_ACTOR_REMINDER_CREATE")
        code, message, reason = _error(remind(period="R0/PT1S"))
        assert (code, reason) == (grpc.StatusCode.INTERNAL, "ERR_ACTOR_REMINDER_CREATE")
        assert "zero repetitions" in message
        code, _, reason = _error(remind(actor_type="Nope"))
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ERR_ACTOR_REMINDER_NON_HOSTED")
        assert _error(remind(name="")) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "invalid request: reminder name cannot be empty", "ERR_BAD_REQUEST")
        code, _, reason = _error(remind(actor_id="a/b"))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "ERR_BAD_REQUEST")
        timer = actors_pb2.RegisterActorTimerRequest(actor_type="Counter", actor_id="x", name="t", period="soon")
        code, _, reason = _error(lambda: stub.RegisterActorTimer(timer, timeout=10))
        assert (code, reason) == (grpc.StatusCode.INTERNAL, "ERR_ACTOR_TIMER_CREATE")

        # State of an actor that is not active here: daprd's gRPC answers INTERNAL (HTTP: 400).
        idle = actors_pb2.ExecuteActorStateTransactionRequest(actor_type="Counter", actor_id="idle",
                                                              operations=[_op("upsert", "k", b"1")])
        assert _error(lambda: stub.ExecuteActorStateTransaction(idle, timeout=10)) == (
            grpc.StatusCode.INTERNAL, "actor instance is missing", "ERR_ACTOR_INSTANCE_MISSING")
        get_idle = actors_pb2.GetActorStateRequest(actor_type="Counter", actor_id="idle", key="k")
        assert _error(lambda: stub.GetActorState(get_idle, timeout=10))[0] == grpc.StatusCode.INTERNAL
        unknown_op = actors_pb2.ExecuteActorStateTransactionRequest(actor_type="Counter", actor_id="idle",
                                                                    operations=[_op("merge", "k", b"1")])
        assert _error(lambda: stub.ExecuteActorStateTransaction(unknown_op, timeout=10)) == (
            grpc.StatusCode.UNIMPLEMENTED, "operation type merge not supported", "ERR_NOT_SUPPORTED_STATE_OPERATION")
    status, _, body = json_request(sc.http_port, "POST", "/v1.0/actors/Counter/idle/state",
                                   json.dumps([{"operation": "upsert", "request": {"key": "k", "value": 1}}]))
    assert (status, body["errorCode"]) == (400, "ERR_ACTOR_INSTANCE_MISSING")
    assert sc.alive()
    _both_fronts_serve(sc)
    status, _, body = request(sc.http_port, "PUT", "/v1.0/actors/Counter/ok/method/add", b"2")
    assert (status, body) == (200, b"2")


def test_concurrent_grpc_calls_to_one_actor_take_turns(actor_sidecar):
    """The gRPC front goes through the same per-actor turn as HTTP: no lost update."""
    _, sc = actor_sidecar
    channel, stub = _stub(sc.grpc_port)
    with channel:
        def add():
            stub.InvokeActor(actors_pb2.InvokeActorRequest(actor_type="Counter", actor_id="busy", method="add",
                                                           data=b"1"), timeout=30)  # fmt: skip

        threads = [threading.Thread(target=add) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert stub.GetActorState(actors_pb2.GetActorStateRequest(actor_type="Counter", actor_id="busy",
                                                                  key="count"), timeout=10).data == b"8"
