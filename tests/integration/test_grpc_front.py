"""The gRPC front itself: when it is loaded, its port, the API token, errors, shutdown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from _grpc import dapr_client, grpc_sidecar
from _http import request
from pillion._testing import free_port, pillion_command

import grpc  # noqa: E402 - after _grpc's importorskip
from dapr.proto.runtime.v1 import dapr_pb2_grpc, metadata_pb2  # noqa: E402
from google.protobuf import empty_pb2  # noqa: E402
from google.rpc import error_details_pb2, status_pb2  # noqa: E402


def _maps_grpc(pid: int) -> bool:
    """Whether grpcio's core library is mapped into the process."""
    with open(f"/proc/{pid}/maps") as f:
        return "cygrpc" in f.read()


def _stub(port: int):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, dapr_pb2_grpc.DaprStub(channel)


def _has_module(pid: int, name: str) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return name in f.read()


def test_the_grpc_front_needs_no_grpcio(sidecar):
    """The front speaks HTTP/2 itself: grpcio's library is not even mapped, with or without it."""
    plain = sidecar("plain")  # the fixture's --dapr-grpc-port 0
    served = grpc_sidecar(sidecar, "served")
    with dapr_client(served) as client:
        assert client.get_metadata().application_id == "served"
    assert not _maps_grpc(plain.proc.pid) and not _maps_grpc(served.proc.pid)
    assert not _has_module(plain.proc.pid, "_upb")  # without a gRPC port not even protobuf
    assert f"gRPC API on port {served.grpc_port}" in served.output()


def test_sdk_client_reads_and_sets_metadata(sidecar):
    sc = grpc_sidecar(sidecar, "meta")
    with dapr_client(sc) as client:
        client.set_metadata("zone", "greenhouse-2")
        meta = client.get_metadata()
    assert meta.application_id == "meta"
    assert meta.extended_metadata["zone"] == "greenhouse-2"
    assert meta.extended_metadata["runtime"] == "pillion"
    # The attribute is the HTTP API's too: one implementation behind both fronts.
    status, _, body = request(sc.http_port, "GET", "/v1.0/metadata")
    assert status == 200 and json.loads(body)["extended"]["zone"] == "greenhouse-2"


def test_api_token_is_required_on_every_call(sidecar):
    sc = grpc_sidecar(sidecar, "secured", env={"DAPR_API_TOKEN": "s3cret"}, wait="/v1.0/healthz")
    channel, stub = _stub(sc.grpc_port)
    with channel:
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetMetadata(metadata_pb2.GetMetadataRequest(), timeout=5)
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert missing.value.details() == "authentication error: api token mismatch"
        with pytest.raises(grpc.RpcError) as wrong:
            stub.GetMetadata(metadata_pb2.GetMetadataRequest(), metadata=(("dapr-api-token", "nope"),), timeout=5)
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        meta = stub.GetMetadata(metadata_pb2.GetMetadataRequest(), metadata=(("dapr-api-token", "s3cret"),), timeout=5)
    assert meta.id == "secured"


def test_errors_carry_the_dapr_code_as_error_info(sidecar):
    sc = grpc_sidecar(sidecar, "errs", env={"DAPR_API_TOKEN": "t"}, wait="/v1.0/healthz")
    channel, stub = _stub(sc.grpc_port)
    with channel:
        with pytest.raises(grpc.RpcError) as err:
            stub.GetMetadata(metadata_pb2.GetMetadataRequest(), timeout=5)
    trailers = dict(err.value.trailing_metadata())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("ERR_API_TOKEN", "dapr.io")


def test_rpcs_pillion_does_not_serve_are_unimplemented_and_the_fronts_keep_serving(sidecar):
    sc = grpc_sidecar(sidecar, "unimpl")
    channel, stub = _stub(sc.grpc_port)
    with channel:
        for call in (lambda: stub.GetWorkflowBeta1(__import__("dapr.proto.runtime.v1.workflow_pb2", fromlist=["x"])
                                                   .GetWorkflowRequest(instance_id="w"), timeout=5),
                     lambda: channel.unary_unary("/dapr.proto.runtime.v1.Dapr/NoSuchMethod")(b"", timeout=5)):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # Garbage where a protobuf message should be: INTERNAL, as grpc-go answers; the server goes on.
        with pytest.raises(grpc.RpcError) as bad:
            channel.unary_unary("/dapr.proto.runtime.v1.Dapr/GetMetadata")(b"\xff\xff\xff\xff", timeout=5)
        assert bad.value.code() == grpc.StatusCode.INTERNAL
        assert bad.value.details().startswith("grpc: error unmarshalling request: ")
        assert stub.GetMetadata(metadata_pb2.GetMetadataRequest(), timeout=5).id == "unimpl"
    assert request(sc.http_port, "GET", "/v1.0/healthz")[0] == 204


def test_shutdown_over_grpc_stops_the_sidecar_cleanly(sidecar):
    sc = grpc_sidecar(sidecar, "bye")
    channel, stub = _stub(sc.grpc_port)
    with channel:
        stub.Shutdown(empty_pb2.Empty(), timeout=5)
    assert sc.proc.wait(15) == 0
    assert "stopping: shutdown API called" in sc.output()


def test_a_taken_grpc_port_stops_start_up(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = subprocess.run(
            pillion_command("sidecar", "--app-id", "taken", "--dapr-http-port", str(free_port()),
                            "--dapr-grpc-port", str(port), "--mqtt-port", "0", "--metrics-port", "0",
                            "--data-dir", str(tmp_path)),
            capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in out.stderr


APP = textwrap.dedent("""
    import json, os
    print(json.dumps({k: os.environ.get(k) for k in ("DAPR_HTTP_PORT", "DAPR_GRPC_PORT")}), flush=True)
""")


def test_run_gives_the_app_the_grpc_port(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(APP)
    http_port, grpc_port = free_port(), free_port()
    out = subprocess.run(
        pillion_command("run", "--app-id", "runner", "--dapr-http-port", str(http_port), "--dapr-grpc-port",
                        str(grpc_port), "--mqtt-port", "0", "--metrics-port", "0", "--data-dir", str(tmp_path),
                        "--", sys.executable, str(app)),
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    env = json.loads(out.stdout.splitlines()[0].removeprefix("== APP == "))
    assert env == {"DAPR_HTTP_PORT": str(http_port), "DAPR_GRPC_PORT": str(grpc_port)}


def test_calls_are_counted_in_metrics_and_logged_by_api_logging(sidecar):
    from prometheus_client.parser import text_string_to_metric_families

    from dapr.proto.runtime.v1 import state_pb2

    metrics_port = free_port()
    sc = grpc_sidecar(sidecar, "observed", "--enable-api-logging", "--metrics-port", str(metrics_port))
    channel, stub = _stub(sc.grpc_port)
    with channel:
        stub.GetMetadata(metadata_pb2.GetMetadataRequest(), timeout=5)
        stub.GetMetadata(metadata_pb2.GetMetadataRequest(), timeout=5)
        with pytest.raises(grpc.RpcError):
            stub.GetState(state_pb2.GetStateRequest(store_name="none", key="k"), timeout=5)
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
    completed = {(s.labels["grpc_server_method"], s.labels["grpc_server_status"]): s.value
                 for s in families["dapr_grpc_io_server_completed_rpcs"].samples}
    assert completed[("/dapr.proto.runtime.v1.Dapr/GetMetadata", "OK")] == 2
    assert completed[("/dapr.proto.runtime.v1.Dapr/GetState", "FAILED_PRECONDITION")] == 1  # no state store
    assert "dapr_grpc_io_server_server_latency" in families
    lines = [line for line in sc.output().splitlines() if "gRPC API Called" in line]
    assert any("method=/dapr.proto.runtime.v1.Dapr/GetMetadata code=OK" in line and "app_id=observed" in line
               for line in lines)
    assert any("method=/dapr.proto.runtime.v1.Dapr/GetState code=FAILED_PRECONDITION" in line for line in lines)


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """(type, payload) of each HTTP/2 frame in ``data``."""
    out, position = [], 0
    while len(data) - position >= 9:
        length = int.from_bytes(data[position:position + 3], "big")
        out.append((data[position + 3], data[position + 9:position + 9 + length]))
        position += 9 + length
    return out


def test_broken_http2_and_plain_http_get_goaway_and_a_close_and_the_fronts_keep_serving(sidecar):
    sc = grpc_sidecar(sidecar, "sturdy")

    def exchange(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", sc.grpc_port), timeout=5) as sock:
            sock.sendall(data)
            received = b""
            while chunk := sock.recv(65536):  # until the server closes the connection
                received += chunk
            return received

    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    protocol_error, frame_size_error, compression_error = 1, 6, 9
    for data, code in (
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", protocol_error),  # not HTTP/2 at all
        (preface + b"\x00\x40\x01\x00\x00\x00\x00\x00\x01" + b"\x00" * 16385, frame_size_error),  # over 16 KiB
        (preface + b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00", protocol_error),  # WINDOW_UPDATE 0
        (preface + b"\x00\x00\x03\x01\x05\x00\x00\x00\x01\xff\xff\xff", compression_error),  # bad header block
    ):
        goaways = [payload for kind, payload in _frames(exchange(data)) if kind == 7]
        assert len(goaways) == 1 and int.from_bytes(goaways[0][4:8], "big") == code, (data[:40], goaways)
    with dapr_client(sc) as client:
        assert client.get_metadata().application_id == "sturdy"
    assert request(sc.http_port, "GET", "/v1.0/healthz")[0] == 204


def test_two_runs_without_a_grpc_port_both_serve_grpc(tmp_path):
    """`pillion run` takes a free port when 50001 is taken (a second app on the device), as dapr run."""
    app = tmp_path / "app.py"
    app.write_text(APP + "import time\ntime.sleep(30)\n")
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 50001))  # whatever holds 50001 (here: us) makes runs fall back
        holder.listen()
    except OSError:
        pass  # something else holds it already: the same situation
    env = dict(os.environ, PILLION_HOME=str(tmp_path / "home"), PILLION_DATA_DIR=str(tmp_path / "data"))
    runs = [subprocess.Popen(pillion_command("run", "--app-id", f"app{i}", "--dapr-http-port", str(free_port()),
                                             "--mqtt-port", "0", "--metrics-port", "0", "--", sys.executable, str(app)),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env) for i in range(2)]
    try:
        ports = [json.loads(run.stdout.readline().removeprefix("== APP == "))["DAPR_GRPC_PORT"] for run in runs]
        assert None not in ports and "50001" not in ports and len(set(ports)) == 2
        for port in ports:
            channel, stub = _stub(int(port))
            with channel:
                assert stub.GetMetadata(metadata_pb2.GetMetadataRequest(), timeout=5).id.startswith("app")
    finally:
        holder.close()
        for run in runs:
            run.terminate()
            run.wait(15)
