"""spec.api allow and deny lists through a real sidecar: each front serves what its rules allow."""

from __future__ import annotations

import json

import pytest

from _grpc import grpc_sidecar
from _http import json_request, request

import grpc  # noqa: E402 - after _grpc's importorskip
from dapr.proto.common.v1 import common_pb2  # noqa: E402
from dapr.proto.runtime.v1 import dapr_pb2_grpc, metadata_pb2, state_pb2  # noqa: E402

CONFIG = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {{name: apis}}
spec:
  api:
{rules}
"""

STATE = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: store}}
spec:
  type: state.lmdb
  version: v1
  metadata:
  - {{name: path, value: "{path}"}}
"""


@pytest.fixture
def start(tmp_path, sidecar):
    def run(rules: str):
        resources = tmp_path / "resources"
        resources.mkdir(exist_ok=True)
        (resources / "store.yaml").write_text(STATE.format(path=tmp_path / "state"))
        config = tmp_path / "config.yaml"
        config.write_text(CONFIG.format(rules=rules))
        return grpc_sidecar(sidecar, "apis", "--resources-path", str(resources), "--config", str(config))

    return run


def _stub(sc):
    channel = grpc.insecure_channel(f"127.0.0.1:{sc.grpc_port}")
    return channel, dapr_pb2_grpc.DaprStub(channel)


def test_an_http_allow_list_leaves_only_its_apis_and_health_on_http(start):
    sc = start("    allowed:\n    - {name: state, version: v1.0, protocol: http}\n")
    assert json_request(sc.http_port, "POST", "/v1.0/state/store", json.dumps([{"key": "k", "value": 1}]).encode())[0] == 204
    assert request(sc.http_port, "GET", "/v1.0/state/store/k")[2] == b"1"
    assert request(sc.http_port, "GET", "/v1.0/healthz")[0] == 204
    status, _, body = request(sc.http_port, "GET", "/v1.0/metadata")
    assert status == 404 and json.loads(body)["errorCode"] == "ERR_DIRECT_INVOKE"  # not routed, as daprd
    assert request(sc.http_port, "POST", "/v1.0/publish/pubsub/t", b"{}")[0] == 404
    # The rules name HTTP only: the gRPC front serves everything.
    channel, stub = _stub(sc)
    with channel:
        assert stub.GetMetadata(metadata_pb2.GetMetadataRequest(), timeout=5).id == "apis"


def test_a_grpc_deny_list_takes_its_apis_off_grpc_only(start):
    sc = start("    denied:\n    - {name: state, version: v1, protocol: grpc}\n")
    channel, stub = _stub(sc)
    with channel:
        with pytest.raises(grpc.RpcError) as err:
            stub.SaveState(state_pb2.SaveStateRequest(store_name="store", states=[
                common_pb2.StateItem(key="k", value=b"2")]), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert stub.GetMetadata(metadata_pb2.GetMetadataRequest(), timeout=5).id == "apis"
    assert json_request(sc.http_port, "POST", "/v1.0/state/store", json.dumps([{"key": "k", "value": 2}]).encode())[0] == 204
