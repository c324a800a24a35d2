"""Service invocation, output bindings, secrets and locks over the gRPC front, against real sidecars.

The official SDK's DaprClient (gRPC mode) for what it can send; the raw stubs for bad input, with
the exact status code and message daprd gives; and mixed fronts (write over one, read over the other).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time

import pytest

from _grpc import dapr_client, grpc_sidecar
from _http import json_request, request
from pillion._testing import free_port
from test_secrets import _resources as secret_resources

import grpc  # noqa: E402 - after _grpc's importorskip
from dapr.proto.common.v1 import common_pb2  # noqa: E402
from dapr.proto.runtime.v1 import binding_pb2, dapr_pb2_grpc, invoke_pb2  # noqa: E402
from dapr.proto.runtime.v1 import lock_pb2, metadata_pb2, secret_pb2  # noqa: E402
from google.protobuf import any_pb2  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

LOCK = ("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: lockstore}\n"
        "spec:\n  type: lock.lmdb\n  version: v1\n  metadata:\n  - {name: keyPrefix, value: none}\n")


def _stub(sc):
    channel = grpc.insecure_channel(f"127.0.0.1:{sc.grpc_port}")
    return channel, dapr_pb2_grpc.DaprStub(channel)


def _fails(call, req, code, message):
    """``call(req)`` fails with ``code`` and exactly ``message``; returns the RpcError."""
    with pytest.raises(grpc.RpcError) as info:
        call(req, timeout=10)
    assert (info.value.code(), info.value.details()) == (code, message)
    return info.value


def _error_info(err) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)
    assert status is not None, "no google.rpc.Status in the trailers"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


def _still_serves(sc, stub):
    assert sc.alive()
    assert request(sc.http_port, "GET", "/v1.0/healthz")[0] == 204
    assert stub.GetMetadata(metadata_pb2.GetMetadataRequest(), timeout=10).id


# ---------------------------------------------------------------- service invocation


@pytest.fixture
def two_sidecars(sidecar, echo_app):
    """An echo app behind ``inventory``; ``checkout`` (with gRPC) calls it through both sidecars."""
    app = echo_app(env={**os.environ, "APP_ID": "inventory"})
    callee = grpc_sidecar(sidecar, "inventory", "--app-port", str(app.port))
    callee.wait_status("/v1.0/healthz", 204)
    caller = grpc_sidecar(sidecar, "checkout")
    caller.callee = callee
    return caller


def _invoke(method, data=b"", verb=None, query="", content_type="", type_url=""):
    ext = common_pb2.HTTPExtension(verb=common_pb2.HTTPExtension.Verb.Value(verb), querystring=query) if verb else None
    return common_pb2.InvokeRequest(method=method, data=any_pb2.Any(type_url=type_url, value=data),
                                    content_type=content_type, http_extension=ext)


def test_invoke_service_reaches_the_app_through_two_sidecars(two_sidecars):
    channel, stub = _stub(two_sidecars)
    with channel:
        req = invoke_pb2.InvokeServiceRequest(id="inventory", message=_invoke(
            "items/7", b"[1]", "PUT", "q=1&r=%20two", "application/json"))
        resp, call = stub.InvokeService.with_call(req, metadata=(("x-custom", "kept"),), timeout=10)
        echo = json.loads(resp.data.value)
        assert (echo["method"], echo["path"], echo["query"]) == ("PUT", "/items/7", "q=1&r=%20two")
        assert base64.b64decode(echo["body"]) == b"[1]"
        sent = {k.lower(): v for k, v in echo["headers"]}
        assert sent["content-type"] == "application/json" and sent["x-custom"] == "kept"
        assert (sent["dapr-caller-app-id"], sent["dapr-callee-app-id"]) == ("checkout", "inventory")
        assert echo["app"] == "inventory"
        assert resp.content_type == "application/json"
        headers = dict(call.initial_metadata())
        assert headers["dapr-http-status"] == "200" and headers["x-echo"] == "yes"
        assert headers["dapr-content-type"] == "application/json"  # a permanent HTTP header gets the prefix

        # A packed protobuf message travels as application/x-protobuf; no http_extension is the verb NONE.
        req = invoke_pb2.InvokeServiceRequest(id="inventory", message=_invoke(
            "proto", b"\x08\x01", "POST", type_url="type.googleapis.com/x.Y", content_type="text/plain"))
        echo = json.loads(stub.InvokeService(req, timeout=10).data.value)
        assert {k.lower(): v for k, v in echo["headers"]}["content-type"] == "application/x-protobuf"


def test_invoke_service_maps_the_app_status_as_daprd(two_sidecars):
    channel, stub = _stub(two_sidecars)
    with channel:
        for status, code, text in ((404, grpc.StatusCode.NOT_FOUND, "Not Found"),
                                   (500, grpc.StatusCode.UNKNOWN, "Internal Server Error"),
                                   (400, grpc.StatusCode.INTERNAL, "Bad Request"),
                                   (418, grpc.StatusCode.UNKNOWN, "I'm a teapot"),
                                   (302, grpc.StatusCode.UNKNOWN, "Found")):
            req = invoke_pb2.InvokeServiceRequest(id="inventory", message=_invoke(f"status/{status}", verb="GET"))
            err = _fails(stub.InvokeService, req, code, text)
            info = _error_info(err)
            assert (info.reason, info.domain, info.metadata["http.code"]) == (text, "dapr.io", str(status))
            assert info.metadata["http.error_message"].startswith(f'{{"method": "GET", "path": "/status/{status}"')
            assert len(info.metadata["http.error_message"]) == 63  # daprd keeps the first 63 bytes
            assert dict(err.initial_metadata())["dapr-http-status"] == str(status)
        # No http_extension: daprd sends the verb NONE, which this app does not implement. Through its own sidecar
        # and through two (whose HTTP/1.1 hop carries NONE in a header), the app's 501 is UNIMPLEMENTED.
        local_channel, local = _stub(two_sidecars.callee)
        with local_channel:
            req = invoke_pb2.InvokeServiceRequest(id="inventory", message=_invoke("x"))
            _fails(local.InvokeService, req, grpc.StatusCode.UNIMPLEMENTED, "Not Implemented")
        err = _fails(stub.InvokeService, invoke_pb2.InvokeServiceRequest(id="inventory", message=_invoke("x")),
                     grpc.StatusCode.UNIMPLEMENTED, "Not Implemented")
        assert _error_info(err).metadata["http.code"] == "501"
        err = _fails(stub.InvokeService, invoke_pb2.InvokeServiceRequest(id="nobody", message=_invoke("x", verb="GET")),
                     grpc.StatusCode.INTERNAL, "failed to invoke, id: nobody, err: couldn't find service: nobody")
        assert _error_info(err).reason == "ERR_DIRECT_INVOKE"
        _still_serves(two_sidecars, stub)


def test_sdk_invoke_method_over_grpc(two_sidecars):
    from dapr.conf import settings

    saved = settings.__dict__.get("DAPR_API_METHOD_INVOCATION_PROTOCOL")
    settings.DAPR_API_METHOD_INVOCATION_PROTOCOL = "grpc"
    try:
        with dapr_client(two_sidecars) as client:
            assert client.invocation_client is None  # the gRPC path, not the HTTP invocation client
            with pytest.warns(DeprecationWarning):
                resp = client.invoke_method("inventory", "orders/1", data=b"hello", content_type="text/plain",
                                            http_verb="POST", http_querystring=(("a", "1"), ("b", "x y")))
    finally:
        if saved is None:
            del settings.DAPR_API_METHOD_INVOCATION_PROTOCOL
        else:
            settings.DAPR_API_METHOD_INVOCATION_PROTOCOL = saved
    echo = json.loads(resp.data)
    assert (echo["method"], echo["path"], echo["query"]) == ("POST", "/orders/1", "a=1&b=x+y")
    assert base64.b64decode(echo["body"]) == b"hello"
    assert {k.lower(): v for k, v in echo["headers"]}["content-type"] == "text/plain"
    assert resp.content_type == "application/json"
    assert resp.headers["dapr-http-status"] == ["200"]


# ---------------------------------------------------------------- output bindings


@pytest.fixture
def bindings(tmp_path, sidecar):
    resources = tmp_path / "resources"
    resources.mkdir()
    files = tmp_path / "files"
    files.mkdir()
    (resources / "devices.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: devices}\n"
        "spec:\n  type: bindings.mqtt3\n  version: v1\n  metadata:\n  - {name: topic, value: 'actuators/default'}\n")
    (resources / "files.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: files}\n"
        f"spec:\n  type: bindings.localstorage\n  version: v1\n  metadata:\n  - {{name: rootPath, value: '{files}'}}\n")
    mqtt_port = free_port()
    sc = grpc_sidecar(sidecar, "binder", "--resources-path", str(resources), "--mqtt-port", str(mqtt_port))
    sc.files, sc.mqtt_port = files, mqtt_port
    return sc


def test_invoke_binding_sends_raw_bytes_to_mqtt(bindings):
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(bindings.mqtt_port), "-t", "actuators/#", "-C", "2", "-W", "10",
                            "-v"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        with dapr_client(bindings) as client:
            resp = client.invoke_binding("devices", "create", data='{"on": true}',
                                         binding_metadata={"topic": "actuators/fan"})
            assert resp.data == b"" and resp.binding_metadata == {}
        time.sleep(0.2)
        # HTTP re-serialises its JSON data; gRPC hands the component the bytes as they came.
        status, _, _ = request(bindings.http_port, "POST", "/v1.0/bindings/devices",
                               json.dumps({"operation": "create", "data": "text"}))
        assert status == 204
        out, _ = sub.communicate(timeout=10)
    finally:
        sub.kill()
    assert out.splitlines() == ['actuators/fan {"on": true}', 'actuators/default "text"']


def test_invoke_binding_localstorage_across_fronts(bindings):
    with dapr_client(bindings) as client:
        resp = client.invoke_binding("files", "create", data="hello", binding_metadata={"fileName": "a.txt"})
        assert json.loads(resp.data) == {"fileName": "a.txt"}
        assert (bindings.files / "a.txt").read_bytes() == b"hello"  # not '"hello"' as over HTTP
        status, _, _ = request(bindings.http_port, "POST", "/v1.0/bindings/files",
                               json.dumps({"operation": "create", "data": {"n": 1},
                                           "metadata": {"fileName": "b.json"}}))
        assert status == 200
        resp = client.invoke_binding("files", "get", binding_metadata={"fileName": "b.json"})
        assert resp.data == b'{"n":1}'
    status, _, body = request(bindings.http_port, "POST", "/v1.0/bindings/files",
                              json.dumps({"operation": "get", "metadata": {"fileName": "a.txt"}}))
    assert (status, body) == (200, b"hello")


def test_invoke_binding_errors(bindings):
    channel, stub = _stub(bindings)
    with channel:
        call = stub.InvokeBinding
        err = _fails(call, binding_pb2.InvokeBindingRequest(name="nope", operation="create"), grpc.StatusCode.INTERNAL,
                     "error invoking output binding nope: couldn't find output binding nope")
        assert _error_info(err).reason == "ERR_INVOKE_OUTPUT_BINDING"
        _fails(call, binding_pb2.InvokeBindingRequest(name="devices", operation="fly"), grpc.StatusCode.INTERNAL,
               "error invoking output binding devices: binding devices does not support operation fly. "
               "supported operations: create")
        _fails(call, binding_pb2.InvokeBindingRequest(name="devices"), grpc.StatusCode.INTERNAL,
               "error invoking output binding devices: operation field is missing from request")
        with pytest.raises(grpc.RpcError) as info:
            call(binding_pb2.InvokeBindingRequest(name="files", operation="get", metadata={"fileName": "../escape"}),
                 timeout=10)
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert info.value.details().startswith("error invoking output binding files: ")
        oversized = binding_pb2.InvokeBindingRequest(name="files", operation="create", data=b"x" * (4 << 20),
                                                     metadata={"fileName": "big"})
        with pytest.raises(grpc.RpcError) as info:
            call(oversized, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # daprd's 4 MiB default limit
        assert not (bindings.files / "big").exists()
        _still_serves(bindings, stub)


# ---------------------------------------------------------------- secrets


@pytest.fixture
def secrets(tmp_path, sidecar):
    folder, config, _ = secret_resources(tmp_path)
    return grpc_sidecar(sidecar, "secretive", "--resources-path", folder, "--config", config, wait="/v1.0/healthz",
                        env={"SECRETS_TEST_TOKEN": "t0ken"})


def test_get_secret_and_bulk_with_the_sdk(secrets):
    with dapr_client(secrets) as client:
        assert client.get_secret("secrets", "open").secret == {"open": "o"}
        assert client.get_secret("multi", "db").secret["user"] == "admin"
        assert client.get_secret("env", "TOKEN").secret == {"TOKEN": "t0ken"}
        bulk = client.get_bulk_secret("secrets").secrets
        assert set(bulk) == {"open", "closed", "db:user", "db:lmdb"}  # "hidden" denied by the scopes
        assert bulk["open"] == {"open": "o"}
        assert client.get_bulk_secret("scoped").secrets == {"open": {"open": "o"}}
        with pytest.raises(grpc.RpcError) as info:
            client.get_secret("secrets", "hidden")
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The same answer over HTTP.
    assert json_request(secrets.http_port, "GET", "/v1.0/secrets/secrets/open")[2] == {"open": "o"}


def test_secret_errors(secrets):
    channel, stub = _stub(secrets)
    with channel:
        err = _fails(stub.GetSecret, secret_pb2.GetSecretRequest(store_name="secrets", key="hidden"),
                     grpc.StatusCode.PERMISSION_DENIED, 'access denied by policy to get "hidden" from "secrets"')
        assert _error_info(err).reason == "ERR_PERMISSION_DENIED"
        _fails(stub.GetSecret, secret_pb2.GetSecretRequest(store_name="scoped", key="closed"),
               grpc.StatusCode.PERMISSION_DENIED, 'access denied by policy to get "closed" from "scoped"')
        err = _fails(stub.GetSecret, secret_pb2.GetSecretRequest(store_name="vault", key="open"),
                     grpc.StatusCode.INVALID_ARGUMENT, "failed finding secret store with key vault")
        assert _error_info(err).reason == "ERR_SECRET_STORE_NOT_FOUND"
        _fails(stub.GetBulkSecret, secret_pb2.GetBulkSecretRequest(store_name="vault"),
               grpc.StatusCode.INVALID_ARGUMENT, "failed finding secret store with key vault")
        _fails(stub.GetSecret, secret_pb2.GetSecretRequest(store_name="secrets", key="nothing"),
               grpc.StatusCode.INTERNAL,
               "failed getting secret with key nothing from secret store secrets: secret nothing not found")
        _still_serves(secrets, stub)


def test_no_secret_store_is_failed_precondition(sidecar, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    sc = grpc_sidecar(sidecar, "bare", "--resources-path", str(empty))
    channel, stub = _stub(sc)
    with channel:
        _fails(stub.GetSecret, secret_pb2.GetSecretRequest(store_name="x", key="y"),
               grpc.StatusCode.FAILED_PRECONDITION, "secret store is not configured")
        _fails(stub.TryLockAlpha1, lock_pb2.TryLockRequest(store_name="x", resource_id="r", lock_owner="o",
                                                           expiry_in_seconds=5),
               grpc.StatusCode.FAILED_PRECONDITION, "lock store is not configured")


# ---------------------------------------------------------------- locks


@pytest.fixture
def lockers(tmp_path, sidecar):
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "lock.yaml").write_text(LOCK)
    return (grpc_sidecar(sidecar, "one", "--resources-path", str(resources)),
            grpc_sidecar(sidecar, "two", "--resources-path", str(resources)))


def test_two_clients_contend_for_a_lock(lockers):
    from dapr.clients.grpc._response import UnlockResponseStatus

    first, second = lockers
    with dapr_client(first) as alice, dapr_client(second) as bob:
        assert alice.try_lock("lockstore", "door", "alice", 2).success
        assert not bob.try_lock("lockstore", "door", "bob", 10).success
        assert bob.unlock("lockstore", "door", "bob").status == UnlockResponseStatus.lock_belongs_to_others
        time.sleep(2.2)
        assert bob.try_lock("lockstore", "door", "bob", 10).success  # alice's lock expired
        assert alice.unlock("lockstore", "door", "alice").status == UnlockResponseStatus.lock_belongs_to_others
        assert bob.unlock("lockstore", "door", "bob").status == UnlockResponseStatus.success
        assert bob.unlock("lockstore", "door", "bob").status == UnlockResponseStatus.lock_does_not_exist
        # Mixed fronts: locked over gRPC, seen and released over HTTP.
        assert alice.try_lock("lockstore", "gate", "alice", 10).success
    lock_http = json.dumps({"resourceId": "gate", "lockOwner": "carol", "expiryInSeconds": 5})
    assert json_request(second.http_port, "POST", "/v1.0-alpha1/lock/lockstore", lock_http)[2] == {"success": False}
    unlock_http = json.dumps({"resourceId": "gate", "lockOwner": "alice"})
    assert json_request(second.http_port, "POST", "/v1.0-alpha1/unlock/lockstore", unlock_http)[2] == {"status": 0}


def test_lock_errors(lockers):
    first, _ = lockers
    channel, stub = _stub(first)

    def lock(**fields):
        return lock_pb2.TryLockRequest(**{"store_name": "lockstore", "resource_id": "door", "lock_owner": "me",
                                          "expiry_in_seconds": 5, **fields})

    with channel:
        err = _fails(stub.TryLockAlpha1, lock(expiry_in_seconds=0), grpc.StatusCode.INVALID_ARGUMENT,
                     "ExpiryInSeconds is not positive in lock store lockstore")
        assert _error_info(err).reason == "ERR_MALFORMED_REQUEST"
        _fails(stub.TryLockAlpha1, lock(expiry_in_seconds=-3, store_name="nope"), grpc.StatusCode.INVALID_ARGUMENT,
               "ExpiryInSeconds is not positive in lock store nope")
        _fails(stub.TryLockAlpha1, lock(resource_id=""), grpc.StatusCode.INVALID_ARGUMENT,
               "ResourceId is empty in lock store lockstore")
        _fails(stub.TryLockAlpha1, lock(lock_owner=""), grpc.StatusCode.INVALID_ARGUMENT,
               "LockOwner is empty in lock store lockstore")
        err = _fails(stub.TryLockAlpha1, lock(store_name="nope"), grpc.StatusCode.INVALID_ARGUMENT,
                     "lock store nope not found")
        assert _error_info(err).reason == "ERR_LOCK_STORE_NOT_FOUND"
        _fails(stub.TryLockAlpha1, lock(resource_id="a||b"), grpc.StatusCode.INTERNAL,
               "failed to try acquiring lock: input key/keyPrefix 'a||b' can't contain '||'")
        unlock = lock_pb2.UnlockRequest(store_name="lockstore", resource_id="", lock_owner="me")
        _fails(stub.UnlockAlpha1, unlock, grpc.StatusCode.INVALID_ARGUMENT,
               "ResourceId is empty in lock store lockstore")
        _fails(stub.UnlockAlpha1, lock_pb2.UnlockRequest(store_name="nope", resource_id="r", lock_owner="me"),
               grpc.StatusCode.INVALID_ARGUMENT, "lock store nope not found")
        _still_serves(first, stub)
