"""The state API through a real sidecar process on real LMDB files (and the in-memory store)."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import time

import pytest

from _http import json_request, request
from _state import get, save, write_resources

@pytest.fixture
def state(tmp_path, sidecar, store_type):
    resources = write_resources(tmp_path, ("store", store_type, {}))
    return sidecar("stateful", "--resources-path", resources, wait="/v1.0/healthz")


def test_values_round_trip_byte_for_byte(state):
    assert save(state, [{"key": "s", "value": "abc"}, {"key": "o", "value": {"b": [1, 2.5, None]}},
                        {"key": "n", "value": 42}])[0] == 204
    for key, expected in (("s", b'"abc"'), ("o", b'{"b":[1,2.5,null]}'), ("n", b"42")):
        status, headers, body = get(state, key)
        assert (status, body) == (200, expected)
        assert headers["Content-Type"] == "application/json"
        assert headers["ETag"]
    status, headers, body = get(state, "missing")
    assert (status, body) == (204, b"") and "ETag" not in headers


def test_etags_and_concurrency(state):
    save(state, [{"key": "k", "value": 1}])
    etag = get(state, "k")[1]["ETag"]
    assert save(state, [{"key": "k", "value": 2, "etag": etag}])[0] == 204
    new_etag = get(state, "k")[1]["ETag"]
    assert new_etag != etag
    status, _, err = save(state, [{"key": "k", "value": 3, "etag": etag}])
    assert (status, err["errorCode"]) == (409, "ERR_STATE_SAVE")
    status, _, err = save(state, [{"key": "k", "value": 3, "options": {"concurrency": "first-write"}}])
    assert (status, err["errorCode"]) == (409, "ERR_STATE_SAVE")
    assert save(state, [{"key": "fresh", "value": 3, "options": {"concurrency": "first-write"}}])[0] == 204
    assert get(state, "k")[2] == b"2"


def test_delete_with_if_match(state):
    save(state, [{"key": "d", "value": "x"}])
    etag = get(state, "d")[1]["ETag"]
    status, _, body = request(state.http_port, "DELETE", "/v1.0/state/store/d", headers={"If-Match": etag + "0"})
    assert status in (400, 409) and json.loads(body)["errorCode"] == "ERR_STATE_DELETE"
    assert request(state.http_port, "DELETE", "/v1.0/state/store/d", headers={"If-Match": etag})[0] == 204
    assert get(state, "d")[0] == 204
    assert request(state.http_port, "DELETE", "/v1.0/state/store/never-there")[0] == 204


def test_bulk_get_keeps_order(state):
    save(state, [{"key": "a", "value": "A"}, {"key": "c", "value": {"c": 1}}])
    status, _, body = json_request(state.http_port, "POST", "/v1.0/state/store/bulk",
                                   json.dumps({"keys": ["c", "missing", "a"]}).encode())
    assert status == 200
    assert [e["key"] for e in body] == ["c", "missing", "a"]
    assert body[0]["data"] == {"c": 1} and body[2]["data"] == "A" and body[0]["etag"]
    assert body[1] == {"key": "missing"}


def test_transactions_are_atomic(state):
    save(state, [{"key": "t1", "value": 1}, {"key": "t2", "value": 2}])
    ops = {"operations": [{"operation": "upsert", "request": {"key": "t3", "value": 3}},
                          {"operation": "delete", "request": {"key": "t1"}}]}
    assert request(state.http_port, "POST", "/v1.0/state/store/transaction", json.dumps(ops).encode())[0] == 204
    assert (get(state, "t1")[0], get(state, "t3")[2]) == (204, b"3")
    bad = {"operations": [{"operation": "upsert", "request": {"key": "t2", "value": 20}},
                          {"operation": "delete", "request": {"key": "t3", "etag": "999999"}}]}
    status, _, err = json_request(state.http_port, "POST", "/v1.0/state/store/transaction", json.dumps(bad).encode())
    assert (status, err["errorCode"]) == (500, "ERR_STATE_TRANSACTION")
    assert get(state, "t2")[2] == b"2" and get(state, "t3")[2] == b"3"
    status, _, err = json_request(state.http_port, "POST", "/v1.0/state/store/transaction",
                                  json.dumps({"operations": [{"operation": "merge", "request": {"key": "x"}}]}).encode())
    assert (status, err["errorCode"]) == (400, "ERR_NOT_SUPPORTED_STATE_OPERATION")


def test_ttl(state):
    assert save(state, [{"key": "brief", "value": 1}], query="?metadata.ttlInSeconds=1")[0] == 204
    status, headers, _ = get(state, "brief")
    assert status == 200 and headers["metadata.ttlExpireTime"].endswith("Z")
    assert save(state, [{"key": "forever", "value": 1, "metadata": {"ttlInSeconds": "-1"}}])[0] == 204
    time.sleep(1.3)
    assert get(state, "brief")[0] == 204
    assert get(state, "forever")[0] == 200


@pytest.mark.parametrize("body, code", [
    (b'{"key": "k"}', "ERR_MALFORMED_REQUEST"),
    (b'[{"value": 1}]', "ERR_MALFORMED_REQUEST"),
    (b'[{"key": "a||b", "value": 1}]', "ERR_MALFORMED_REQUEST"),
    (b'[{"key": "k", "value": 1', "ERR_MALFORMED_REQUEST"),
    (b'[{"key": "k", "value": 1, "options": {"concurrency": "sometimes"}}]', "ERR_MALFORMED_REQUEST"),
    (b'[{"key": "k", "value": 1, "metadata": {"ttlInSeconds": "soon"}}]', "ERR_MALFORMED_REQUEST"),
])
def test_bad_saves_change_nothing(state, body, code):
    status, _, err = json_request(state.http_port, "POST", "/v1.0/state/store", body)
    assert (status, err["errorCode"]) == (400, code)
    assert get(state, "k")[0] == 204
    assert request(state.http_port, "GET", "/v1.0/healthz")[0] == 204


def test_unknown_store(state):
    status, _, err = save(state, [{"key": "k", "value": 1}], store="nope")
    assert (status, err["errorCode"]) == (400, "ERR_STATE_STORE_NOT_FOUND")
    status, _, err = json_request(state.http_port, "POST", "/v1.0-alpha1/state/nope/query", b"{}")
    assert (status, err["errorCode"]) == (400, "ERR_STATE_STORE_NOT_FOUND")


def test_no_store_configured(sidecar):
    sc = sidecar("stateless")
    status, _, err = json_request(sc.http_port, "GET", "/v1.0/state/any/k")
    assert (status, err["errorCode"]) == (500, "ERR_STATE_STORE_NOT_CONFIGURED")


def test_metadata_lists_the_store_and_its_capabilities(state, store_type):
    components = json_request(state.http_port, "GET", "/v1.0/metadata")[2]["components"]
    assert components[0]["name"] == "store" and components[0]["type"] == store_type
    assert {"ETAG", "TRANSACTIONAL", "TTL", "QUERY_API"} <= set(components[0]["capabilities"])


def test_sidecars_sharing_a_data_dir_see_their_own_keys(tmp_path, sidecar):
    resources = write_resources(tmp_path, ("store", "state.lmdb", {}))
    one = sidecar("one", "--resources-path", resources, wait="/v1.0/healthz")
    two = sidecar("two", "--resources-path", resources, wait="/v1.0/healthz")
    assert save(one, [{"key": "k", "value": "from one"}])[0] == 204
    assert save(two, [{"key": "k", "value": "from two"}])[0] == 204
    assert get(one, "k")[2] == b'"from one"' and get(two, "k")[2] == b'"from two"'
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: save(one if i % 2 else two, [{"key": f"c{i}", "value": i}])[0], range(200)))
    assert set(results) == {204}
    assert all(get(one if i % 2 else two, f"c{i}")[2] == str(i).encode() for i in range(200))


def test_acknowledged_writes_survive_kill_9(tmp_path, sidecar):
    resources = write_resources(tmp_path, ("store", "state.lmdb", {}))
    sc = sidecar("durable", "--resources-path", resources, wait="/v1.0/healthz")
    acknowledged = []

    def writer(i):
        try:
            if save(sc, [{"key": f"w{i}", "value": {"n": i}}])[0] == 204:
                acknowledged.append(i)
        except OSError:
            pass

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(writer, i) for i in range(1000)]
        time.sleep(0.3)
        sc.proc.send_signal(signal.SIGKILL)
        concurrent.futures.wait(futures)
    sc.proc.wait()
    assert acknowledged, "no write was acknowledged before the kill"
    again = sidecar("durable", "--resources-path", resources, wait="/v1.0/healthz")
    for i in acknowledged:
        assert get(again, f"w{i}")[2] == json.dumps({"n": i}, separators=(",", ":")).encode(), i


def test_key_prefix_none_shares_keys_between_apps(tmp_path, sidecar):
    resources = write_resources(tmp_path, ("store", "state.lmdb", {"keyPrefix": "none"}))
    one = sidecar("alpha", "--resources-path", resources, wait="/v1.0/healthz")
    two = sidecar("beta", "--resources-path", resources, wait="/v1.0/healthz")
    assert save(one, [{"key": "shared", "value": "hello"}])[0] == 204
    assert get(two, "shared")[2] == b'"hello"'


def test_bad_store_metadata_stops_start_up(tmp_path):
    import subprocess
    import sys

    resources = write_resources(tmp_path, ("store", "state.lmdb", {"durability": "sometimes"}))
    out = subprocess.run([sys.executable, "-m", "pillion", "sidecar", "--app-id", "x", "--dapr-http-port", "0",
                          "--resources-path", resources, "--data-dir", str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "store.yaml (document 0)" in out.stderr and "durability" in out.stderr


def test_pillion_init_gives_a_working_statestore(tmp_path, sidecar):
    import os
    import subprocess
    import sys

    env = dict(os.environ, PILLION_HOME=str(tmp_path / "home"), PILLION_DATA_DIR=str(tmp_path / "data"))
    assert subprocess.run([sys.executable, "-m", "pillion", "init"], env=env, capture_output=True).returncode == 0
    sc = sidecar("initialised", "--resources-path", str(tmp_path / "home" / "components"), wait="/v1.0/healthz")
    assert save(sc, [{"key": "k", "value": "v"}], store="statestore")[0] == 204
    assert get(sc, "k", store="statestore")[2] == b'"v"'
    components = {c["name"]: c for c in json_request(sc.http_port, "GET", "/v1.0/metadata")[2]["components"]}
    assert "ACTOR" in components["statestore"]["capabilities"]
    assert components["pubsub"]["type"] == "pubsub.mqtt"


def test_etag_race_has_exactly_one_winner_per_round(state):
    save(state, [{"key": "race", "value": 0}])
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        for round_ in range(1, 4):
            etag = get(state, "race")[1]["ETag"]
            statuses = list(pool.map(
                lambda i: save(state, [{"key": "race", "value": round_ * 1000 + i, "etag": etag}])[0], range(100)))
            assert statuses.count(204) == 1 and statuses.count(409) == 99, statuses
            assert json.loads(get(state, "race")[2]) // 1000 == round_


def test_oversized_value_is_refused_and_changes_nothing(tmp_path, sidecar):
    resources = write_resources(tmp_path, ("store", "state.lmdb", {}))
    sc = sidecar("small", "--resources-path", resources, "--max-body-size", "64Ki", wait="/v1.0/healthz")
    big = json.dumps([{"key": "big", "value": "x" * 70_000}]).encode()
    status, _, body = request(sc.http_port, "POST", "/v1.0/state/store", big)
    assert status == 413 and json.loads(body)["errorCode"] == "ERR_BODY_READ"
    assert get(sc, "big")[0] == 204
    assert save(sc, [{"key": "big", "value": "x" * 60_000}])[0] == 204


def test_too_many_transaction_operations(tmp_path, sidecar):
    resources = write_resources(tmp_path, ("store", "state.lmdb", {}))
    sc = sidecar("bulky", "--resources-path", resources, wait="/v1.0/healthz")
    ops = [{"operation": "upsert", "request": {"key": f"k{i}", "value": i}} for i in range(10_001)]
    status, _, err = json_request(sc.http_port, "POST", "/v1.0/state/store/transaction",
                                  json.dumps({"operations": ops}).encode())
    assert (status, err["errorCode"]) == (400, "ERR_STATE_STORE_TOO_MANY_TRANSACTIONS")
    assert get(sc, "k0")[0] == 204
    status = request(sc.http_port, "POST", "/v1.0/state/store/transaction",
                     json.dumps({"operations": ops[:10_000]}).encode())[0]
    assert status == 204 and get(sc, "k9999")[2] == b"9999"


def test_malformed_etag_is_400_and_changes_nothing(state):
    save(state, [{"key": "m", "value": 1}])
    for etag in ("not-a-version", "-1", "1.5"):
        status, _, err = save(state, [{"key": "m", "value": 2, "etag": etag}])
        assert (status, err["errorCode"]) == (400, "ERR_STATE_SAVE"), etag
        status, _, body = request(state.http_port, "DELETE", "/v1.0/state/store/m", headers={"If-Match": etag})
        assert (status, json.loads(body)["errorCode"]) == (400, "ERR_STATE_DELETE"), etag
    assert get(state, "m")[2] == b"1"
