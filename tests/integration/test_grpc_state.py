"""The state API over gRPC: the official SDK's DaprClient, raw stubs for bad input, and both fronts mixed."""

from __future__ import annotations

import json
import time

import pytest

from _grpc import dapr_client, grpc_sidecar
from _http import json_request, request
from _state import get, save, write_resources

import grpc  # after _grpc, which skips this module without the grpc extra
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, StateItem, StateOptions
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@pytest.fixture
def state(tmp_path, sidecar, store_type):
    resources = write_resources(tmp_path, ("store", store_type, {}))
    return grpc_sidecar(sidecar, "stateful", "--resources-path", resources, wait="/v1.0/healthz")


@pytest.fixture
def lmdb_state(tmp_path, sidecar):
    resources = write_resources(tmp_path, ("store", "state.lmdb", {}))
    return grpc_sidecar(sidecar, "stateful", "--resources-path", resources, wait="/v1.0/healthz")


@pytest.fixture
def stub(lmdb_state):
    with grpc.insecure_channel(f"127.0.0.1:{lmdb_state.grpc_port}") as channel:
        yield dapr_pb2_grpc.DaprStub(channel)


def rpc_error(call, request_message) -> grpc.RpcError:
    """The RpcError a raw stub call raises (the test fails if the call succeeds)."""
    with pytest.raises(grpc.RpcError) as info:
        call(request_message, timeout=10)
    return info.value


def reason(err: grpc.RpcError) -> str:
    """The ErrorInfo reason (the ERR_* code) in the status details daprd attaches."""
    status = rpc_status.from_call(err)
    assert status is not None, "no grpc-status-details-bin trailer"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError("no ErrorInfo detail")


def assert_serving(sc) -> None:
    """Both fronts still answer after a bad request."""
    assert request(sc.http_port, "GET", "/v1.0/healthz")[0] == 204
    assert save(sc, [{"key": "alive", "value": "yes"}])[0] == 204
    with grpc.insecure_channel(f"127.0.0.1:{sc.grpc_port}") as channel:
        out = dapr_pb2_grpc.DaprStub(channel).GetState(state_pb2.GetStateRequest(store_name="store", key="alive"),
                                                       timeout=10)
    assert out.data == b'"yes"'


def test_sdk_save_and_get_with_etags_and_first_write(state):
    with dapr_client(state) as client:
        client.save_state("store", "k", b"\x00raw\xff")
        got = client.get_state("store", "k")
        assert got.data == b"\x00raw\xff" and got.etag
        client.save_state("store", "k", "v2", etag=got.etag)
        newer = client.get_state("store", "k")
        assert (newer.data, newer.etag != got.etag) == (b"v2", True)

        with pytest.raises(DaprGrpcError) as stale:
            client.save_state("store", "k", "v3", etag=got.etag)
        assert (stale.value.code(), stale.value.error_code()) == (grpc.StatusCode.ABORTED, "ERR_STATE_SAVE")
        assert stale.value.details().startswith("failed saving state in state store store: ")

        first = StateOptions(concurrency=Concurrency.first_write)
        with pytest.raises(DaprGrpcError) as taken:
            client.save_state("store", "k", "v4", options=first)
        assert taken.value.code() == grpc.StatusCode.ABORTED
        client.save_state("store", "fresh", "v5", options=first)
        assert client.get_state("store", "fresh").data == b"v5"
        assert client.get_state("store", "k").data == b"v2"

        # A missing key is an empty answer, not an error.
        missing = client.get_state("store", "never-saved")
        assert (missing.data, missing.etag) == (b"", "")


def test_invalid_etag_is_invalid_argument(lmdb_state):
    with dapr_client(lmdb_state) as client:
        client.save_state("store", "k", "v")
        with pytest.raises(DaprGrpcError) as bad:
            client.save_state("store", "k", "v2", etag="not-a-version")
        assert (bad.value.code(), bad.value.error_code()) == (grpc.StatusCode.INVALID_ARGUMENT, "ERR_STATE_SAVE")
        assert client.get_state("store", "k").data == b"v"


def test_sdk_bulk_save_and_bulk_get_keep_order(state):
    with dapr_client(state) as client:
        client.save_bulk_state("store", [StateItem("a", "A"), StateItem("c", b'{"c":1}')])
        items = client.get_bulk_state("store", ["c", "missing", "a"], parallelism=2).items
        assert [i.key for i in items] == ["c", "missing", "a"]
        assert (items[0].data, items[2].data) == (b'{"c":1}', b"A")
        assert items[0].etag and items[2].etag and not items[0].error
        assert (items[1].data, items[1].etag, items[1].error) == (b"", "", "")
        assert client.get_bulk_state("store", []).items == []


def test_sdk_delete_with_etag(state):
    with dapr_client(state) as client:
        client.save_state("store", "d", "x")
        etag = client.get_state("store", "d").etag
        with pytest.raises(DaprGrpcError) as stale:
            client.delete_state("store", "d", etag=str(int(etag) + 1))
        assert (stale.value.code(), stale.value.error_code()) == (grpc.StatusCode.ABORTED, "ERR_STATE_DELETE")
        assert stale.value.details().startswith("failed deleting state with key d: ")
        with pytest.raises(DaprGrpcError) as bad:
            client.delete_state("store", "d", etag="x1")
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert client.get_state("store", "d").data == b"x"
        client.delete_state("store", "d", etag=etag)
        assert client.get_state("store", "d").data == b""
        client.delete_state("store", "never-there")


def test_delete_bulk_state_is_all_or_nothing(stub):
    stub.SaveState(state_pb2.SaveStateRequest(store_name="store", states=[
        common_pb2.StateItem(key=k, value=b"1") for k in ("x", "y", "z")]), timeout=10)
    etag = stub.GetState(state_pb2.GetStateRequest(store_name="store", key="y"), timeout=10).etag
    stale = state_pb2.DeleteBulkStateRequest(store_name="store", states=[
        common_pb2.StateItem(key="x"), common_pb2.StateItem(key="y", etag=common_pb2.Etag(value=str(int(etag) + 5)))])
    err = rpc_error(stub.DeleteBulkState, stale)
    assert (err.code(), reason(err)) == (grpc.StatusCode.ABORTED, "ERR_STATE_DELETE")
    assert err.details().startswith("failed deleting state in state store store: ")
    assert stub.GetState(state_pb2.GetStateRequest(store_name="store", key="x"), timeout=10).data == b"1"
    stub.DeleteBulkState(state_pb2.DeleteBulkStateRequest(store_name="store", states=[
        common_pb2.StateItem(key="x"), common_pb2.StateItem(key="y", etag=common_pb2.Etag(value=etag))]), timeout=10)
    bulk = stub.GetBulkState(state_pb2.GetBulkStateRequest(store_name="store", keys=["x", "y", "z"]), timeout=10)
    assert [i.data for i in bulk.items] == [b"", b"", b"1"]


def test_sdk_transaction_applies_all_or_nothing(state):
    with dapr_client(state) as client:
        client.save_bulk_state("store", [StateItem("t1", "1"), StateItem("t2", "2")])
        client.execute_state_transaction("store", [
            TransactionalStateOperation("t3", "3"),
            TransactionalStateOperation("t1", operation_type=TransactionOperationType.delete),
        ])
        assert (client.get_state("store", "t1").data, client.get_state("store", "t3").data) == (b"", b"3")
        with pytest.raises(DaprGrpcError) as failed:
            client.execute_state_transaction("store", [
                TransactionalStateOperation("t2", "20"),
                TransactionalStateOperation("t3", operation_type=TransactionOperationType.delete, etag="999999"),
            ])
        # daprd answers any store failure of a transaction, ETag ones included, with INTERNAL.
        assert (failed.value.code(), failed.value.error_code()) == (grpc.StatusCode.INTERNAL, "ERR_STATE_TRANSACTION")
        assert failed.value.details().startswith("error while executing state transaction: ")
        assert (client.get_state("store", "t2").data, client.get_state("store", "t3").data) == (b"2", b"3")


def test_sdk_query_state(lmdb_state):
    people = {"1": {"city": "Seattle", "state": "WA"}, "2": {"city": "Portland", "state": "OR"},
              "3": {"city": "Spokane", "state": "WA"}, "4": {"city": "Tacoma", "state": "WA"}}
    assert save(lmdb_state, [{"key": k, "value": v} for k, v in people.items()])[0] == 204
    query = {"filter": {"EQ": {"state": "WA"}}, "sort": [{"key": "city"}], "page": {"limit": 2}}
    with dapr_client(lmdb_state) as client:
        with pytest.warns(UserWarning):  # the SDK flags the alpha API
            first = client.query_state("store", json.dumps(query))
        assert [(r.key, json.loads(r.value)["city"]) for r in first.results] == [("1", "Seattle"), ("3", "Spokane")]
        assert all(r.etag for r in first.results) and first.token
        query["page"]["token"] = first.token
        with pytest.warns(UserWarning):
            second = client.query_state("store", json.dumps(query))
        assert [r.key for r in second.results] == ["4"]
        with pytest.warns(UserWarning):
            none = client.query_state("store", json.dumps({"filter": {"EQ": {"state": "TX"}}}))
        assert (list(none.results), none.token) == ([], "")


def test_query_state_with_a_body_that_is_not_json(stub):
    err = rpc_error(stub.QueryStateAlpha1, state_pb2.QueryStateRequest(store_name="store", query="{nope"))
    assert (err.code(), reason(err)) == (grpc.StatusCode.INTERNAL, "ERR_STATE_QUERY")
    assert "failed to parse JSON query body" in err.details()


def test_ttl_over_grpc_and_its_expire_time_on_both_fronts(lmdb_state, stub):
    with dapr_client(lmdb_state) as client:
        client.save_state("store", "brief", "gone soon", state_metadata={"ttlInSeconds": "1"})
        client.save_state("store", "kept", "here", state_metadata={"ttlInSeconds": "-1"})
    out = stub.GetState(state_pb2.GetStateRequest(store_name="store", key="brief"), timeout=10)
    assert out.data == b"gone soon" and out.metadata["ttlExpireTime"].endswith("Z")
    assert get(lmdb_state, "brief")[1]["metadata.ttlExpireTime"] == out.metadata["ttlExpireTime"]
    assert "ttlExpireTime" not in stub.GetState(state_pb2.GetStateRequest(store_name="store", key="kept"),
                                                timeout=10).metadata
    bad = state_pb2.SaveStateRequest(store_name="store", states=[
        common_pb2.StateItem(key="t", value=b"1", metadata={"ttlInSeconds": "soon"})])
    err = rpc_error(stub.SaveState, bad)
    assert (err.code(), reason(err)) == (grpc.StatusCode.INVALID_ARGUMENT, "ERR_MALFORMED_REQUEST")
    time.sleep(2.1)
    assert stub.GetState(state_pb2.GetStateRequest(store_name="store", key="brief"), timeout=10).data == b""
    assert get(lmdb_state, "brief")[0] == 204
    assert stub.GetState(state_pb2.GetStateRequest(store_name="store", key="kept"), timeout=10).data == b"here"


def test_json_content_type_values_must_be_json(stub, lmdb_state):
    json_item = common_pb2.StateItem(key="j", value=b'{ "a" : [1, 2] }', metadata={"contentType": "application/json"})
    stub.SaveState(state_pb2.SaveStateRequest(store_name="store", states=[json_item]), timeout=10)
    assert stub.GetState(state_pb2.GetStateRequest(store_name="store", key="j"), timeout=10).data == b'{"a":[1,2]}'
    status, headers, body = get(lmdb_state, "j")
    assert (status, body, headers["Content-Type"]) == (200, b'{"a":[1,2]}', "application/json")
    broken = common_pb2.StateItem(key="j", value=b"{not json", metadata={"contentType": "application/json"})
    err = rpc_error(stub.SaveState, state_pb2.SaveStateRequest(store_name="store", states=[broken]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_mixed_fronts(state):
    """HTTP stores JSON text, gRPC raw bytes; each front reads the other's bytes unchanged."""
    assert save(state, [{"key": "h", "value": {"a": [1, "x"]}}, {"key": "s", "value": "text"}])[0] == 204
    http_etag = get(state, "h")[1]["ETag"]
    with dapr_client(state) as client:
        from_http = client.get_state("store", "h")
        assert (from_http.data, from_http.etag) == (b'{"a":[1,"x"]}', http_etag)
        assert client.get_state("store", "s").data == b'"text"'
        client.save_state("store", "g", b"\x01\x02 not json")
        client.save_state("store", "h", b'{"a":2}', etag=http_etag)
        grpc_etag = client.get_state("store", "h").etag
    status, headers, body = get(state, "g")
    assert (status, body) == (200, b"\x01\x02 not json")
    status, headers, body = get(state, "h")
    assert (status, body, headers["ETag"]) == (200, b'{"a":2}', grpc_etag)
    # An ETag read over gRPC guards an HTTP write, and the reverse.
    status, _, err = save(state, [{"key": "h", "value": 3, "etag": http_etag}])
    assert (status, err["errorCode"]) == (409, "ERR_STATE_SAVE")
    status, _, body = json_request(state.http_port, "POST", "/v1.0/state/store/bulk",
                                   json.dumps({"keys": ["h", "s", "g"]}).encode())
    # Bytes that are not JSON (saved over gRPC) come back in a JSON answer as a string.
    assert status == 200 and [e["data"] for e in body] == [{"a": 2}, "text", "\x01\x02 not json"]


def test_bad_input_gets_daprs_codes_and_both_fronts_keep_serving(stub, lmdb_state):
    err = rpc_error(stub.GetState, state_pb2.GetStateRequest(store_name="nope", key="k"))
    assert (err.code(), err.details(), reason(err)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "state store nope is not found", "ERR_STATE_STORE_NOT_FOUND")
    err = rpc_error(stub.SaveState, state_pb2.SaveStateRequest(store_name="nope", states=[
        common_pb2.StateItem(key="k", value=b"1")]))
    assert (err.code(), reason(err)) == (grpc.StatusCode.INVALID_ARGUMENT, "ERR_STATE_STORE_NOT_FOUND")

    err = rpc_error(stub.SaveState, state_pb2.SaveStateRequest(store_name="store", states=[
        common_pb2.StateItem(key="", value=b"1")]))
    assert (err.code(), err.details(), reason(err)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "state key cannot be empty", "ERR_MALFORMED_REQUEST")
    err = rpc_error(stub.GetState, state_pb2.GetStateRequest(store_name="store", key=""))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

    for call, message in (
        (stub.GetState, state_pb2.GetStateRequest(store_name="store", key="a||b")),
        (stub.SaveState, state_pb2.SaveStateRequest(store_name="store", states=[
            common_pb2.StateItem(key="a||b", value=b"1")])),
        (stub.DeleteState, state_pb2.DeleteStateRequest(store_name="store", key="a||b")),
        (stub.GetBulkState, state_pb2.GetBulkStateRequest(store_name="store", keys=["ok", "a||b"])),
    ):
        err = rpc_error(call, message)
        assert (err.code(), err.details(), reason(err)) == (
            grpc.StatusCode.INVALID_ARGUMENT, "input key/keyPrefix 'a||b' can't contain '||'", "ERR_MALFORMED_REQUEST")

    merge = state_pb2.ExecuteStateTransactionRequest(storeName="store", operations=[
        state_pb2.TransactionalStateOperation(operationType="upsert", request=common_pb2.StateItem(key="m", value=b"1")),
        state_pb2.TransactionalStateOperation(operationType="merge", request=common_pb2.StateItem(key="m"))])
    err = rpc_error(stub.ExecuteStateTransaction, merge)
    assert (err.code(), err.details(), reason(err)) == (
        grpc.StatusCode.UNIMPLEMENTED, "operation type merge not supported", "ERR_NOT_SUPPORTED_STATE_OPERATION")
    assert stub.GetState(state_pb2.GetStateRequest(store_name="store", key="m"), timeout=10).data == b""

    huge = state_pb2.SaveStateRequest(store_name="store", states=[
        common_pb2.StateItem(key="big", value=b"x" * (4 * 1024 * 1024 + 1))])
    assert rpc_error(stub.SaveState, huge).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.GetState(state_pb2.GetStateRequest(store_name="store", key="big"), timeout=10).data == b""
    assert_serving(lmdb_state)


def test_no_state_store_is_failed_precondition(tmp_path, sidecar):
    empty = tmp_path / "no-resources"
    empty.mkdir()
    sc = grpc_sidecar(sidecar, "bare", "--resources-path", str(empty), wait="/v1.0/healthz")
    with grpc.insecure_channel(f"127.0.0.1:{sc.grpc_port}") as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        err = rpc_error(stub.GetState, state_pb2.GetStateRequest(store_name="store", key="k"))
        assert (err.code(), err.details(), reason(err)) == (
            grpc.StatusCode.FAILED_PRECONDITION, "state store is not configured", "ERR_STATE_STORE_NOT_CONFIGURED")
        err = rpc_error(stub.ExecuteStateTransaction, state_pb2.ExecuteStateTransactionRequest(storeName="store"))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert request(sc.http_port, "GET", "/v1.0/healthz")[0] == 204
