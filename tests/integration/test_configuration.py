"""The configuration API through real sidecars, changed with `pillion config` from the shell."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from _http import json_request, request
from test_pubsub import SubscriberApp

from pillion._testing import Sidecar, pillion_command, wait_for

STORE = ("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: configstore}\n"
         "spec:\n  type: configuration.lmdb\n  version: v1\n  metadata:\n  - {name: pollInterval, value: 100ms}\n")


@pytest.fixture
def resources(tmp_path):
    folder = tmp_path / "resources"
    folder.mkdir()
    (folder / "configstore.yaml").write_text(STORE)
    return folder


def pillion_config(tmp_path, resources, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PILLION_DATA_DIR=str(tmp_path / "data"), PILLION_HOME=str(tmp_path / "home"))
    return subprocess.run(pillion_command("config", *args[:1], "--resources-path", str(resources), *args[1:]),
                          env=env, capture_output=True, text=True, timeout=30)


def updates(app: SubscriberApp) -> list[tuple[str, dict]]:
    return [(entry["path"], json.loads(entry["body"])) for entry in app.received()
            if entry["path"].startswith("/configuration/")]


def test_get_reads_what_the_cli_wrote(tmp_path, processes, resources):
    assert pillion_config(tmp_path, resources, "set", "--metadata", "owner=ops",
                          "motor.speed=1200", "motor.mode=eco").returncode == 0
    sidecar = Sidecar(tmp_path, "reader", "--resources-path", str(resources))
    processes.append(sidecar)
    status, _, body = json_request(sidecar.http_port, "GET", "/v1.0/configuration/configstore?key=motor.speed")
    assert status == 200
    assert body["motor.speed"]["value"] == "1200"
    assert body["motor.speed"]["metadata"] == {"owner": "ops"}
    assert body["motor.speed"]["version"].isdigit()
    status, _, body = json_request(sidecar.http_port, "GET", "/v1.0-alpha1/configuration/configstore")
    assert status == 200 and {k: v["value"] for k, v in body.items()} == {"motor.speed": "1200", "motor.mode": "eco"}
    status, _, body = request(sidecar.http_port, "GET", "/v1.0/configuration/configstore?key=absent")
    assert (status, body) == (204, b"")
    # The metadata API lists the store.
    _, _, metadata = json_request(sidecar.http_port, "GET", "/v1.0/metadata")
    assert {"name": "configstore", "type": "configuration.lmdb"} in [
        {"name": c["name"], "type": c["type"]} for c in metadata["components"]]


def test_subscribers_are_notified_of_cli_changes(tmp_path, processes, resources):
    app = SubscriberApp(tmp_path, {})
    processes.append(app)
    sidecar = Sidecar(tmp_path, "watcher", "--resources-path", str(resources), "--app-port", str(app.port))
    processes.append(sidecar)
    status, _, body = json_request(sidecar.http_port, "GET",
                                   "/v1.0/configuration/configstore/subscribe?key=motor.speed&key=motor.mode")
    assert status == 200
    subscription = body["id"]

    assert pillion_config(tmp_path, resources, "set", "motor.speed=900", "fan=on").returncode == 0
    wait_for(lambda: updates(app), what="the update at the app")
    path, body = updates(app)[0]
    assert path == "/configuration/configstore/motor.speed"
    assert body["id"] == subscription
    assert list(body["items"]) == ["motor.speed"]  # fan is not subscribed to
    assert body["items"]["motor.speed"]["value"] == "900"

    # One update with two keys: one POST per key, each carrying the whole update.
    assert pillion_config(tmp_path, resources, "set", "motor.speed=1000", "motor.mode=boost").returncode == 0
    wait_for(lambda: len(updates(app)) == 3, what="the second update")
    second = updates(app)[1:]
    assert sorted(path for path, _ in second) == ["/configuration/configstore/motor.mode",
                                                   "/configuration/configstore/motor.speed"]
    assert second[0][1] == second[1][1]
    assert {k: v["value"] for k, v in second[0][1]["items"].items()} == {"motor.speed": "1000", "motor.mode": "boost"}

    # A deletion arrives with an empty value.
    deleted = pillion_config(tmp_path, resources, "delete", "motor.mode")
    assert deleted.returncode == 0 and "deleted motor.mode" in deleted.stdout
    wait_for(lambda: len(updates(app)) == 4, what="the deletion")
    assert updates(app)[3][1]["items"]["motor.mode"]["value"] == ""

    status, _, body = json_request(sidecar.http_port, "GET",
                                   f"/v1.0/configuration/configstore/{subscription}/unsubscribe")
    assert (status, body) == (200, {"ok": True})
    assert pillion_config(tmp_path, resources, "set", "motor.speed=1").returncode == 0
    status, _, body = json_request(sidecar.http_port, "GET",
                                   f"/v1.0/configuration/configstore/{subscription}/unsubscribe")
    assert status == 500 and body["ok"] is False and subscription in body["message"]
    # The change after the unsubscribe reached nobody (the store polls every 100ms).
    subscribe_all = json_request(sidecar.http_port, "GET", "/v1.0/configuration/configstore/subscribe")
    assert subscribe_all[0] == 200
    assert pillion_config(tmp_path, resources, "set", "fan=off").returncode == 0
    wait_for(lambda: len(updates(app)) == 5, what="the update of the subscription to every key")
    path, body = updates(app)[4]
    assert path == "/configuration/configstore/fan" and body["id"] == subscribe_all[2]["id"]


def test_two_sidecars_each_notify_their_app(tmp_path, processes, resources):
    apps = [SubscriberApp(tmp_path, {}) for _ in range(2)]
    processes.extend(apps)
    for index, app in enumerate(apps):
        sidecar = Sidecar(tmp_path, f"app{index}", "--resources-path", str(resources), "--app-port", str(app.port))
        processes.append(sidecar)
        assert json_request(sidecar.http_port, "GET", "/v1.0/configuration/configstore/subscribe?key=k")[0] == 200
    assert pillion_config(tmp_path, resources, "set", "k=v").returncode == 0
    for app in apps:
        wait_for(lambda app=app: updates(app), what="the update at each app")
        assert updates(app)[0][1]["items"]["k"]["value"] == "v"


def test_errors(tmp_path, processes, resources):
    sidecar = Sidecar(tmp_path, "no-app", "--resources-path", str(resources))
    bare = Sidecar(tmp_path, "bare")
    processes.extend([sidecar, bare])
    status, _, body = json_request(sidecar.http_port, "GET", "/v1.0/configuration/nope?key=a")
    assert (status, body["errorCode"]) == (400, "ERR_CONFIGURATION_STORE_NOT_FOUND")
    status, _, body = json_request(bare.http_port, "GET", "/v1.0/configuration/configstore?key=a")
    assert (status, body["errorCode"]) == (500, "ERR_CONFIGURATION_STORE_NOT_CONFIGURED")
    status, _, body = json_request(sidecar.http_port, "GET", "/v1.0/configuration/configstore/subscribe?key=a")
    assert (status, body["errorCode"]) == (500, "ERR_APP_CHANNEL_NIL")
    status, _, body = json_request(sidecar.http_port, "GET", f"/v1.0/configuration/configstore?key={'k' * 600}")
    assert (status, body["errorCode"]) == (500, "ERR_CONFIGURATION_GET")


def test_cli_exit_codes_and_output(tmp_path, resources):
    assert pillion_config(tmp_path, resources, "set", "a=1", "b==2").returncode == 0
    out = pillion_config(tmp_path, resources, "get", "-o", "json", "a", "b")
    assert out.returncode == 0
    assert {k: v["value"] for k, v in json.loads(out.stdout).items()} == {"a": "1", "b": "=2"}
    missing = pillion_config(tmp_path, resources, "get", "a", "zzz")
    assert missing.returncode == 1 and "a = 1" in missing.stdout and "'zzz'" in missing.stderr
    bad = pillion_config(tmp_path, resources, "set", "novalue")
    assert bad.returncode == 2 and "an item must be NAME=VALUE, got 'novalue'" in bad.stderr
    wrong = pillion_config(tmp_path, resources, "get", "--store", "other")
    assert wrong.returncode == 2 and "configuration store 'other'" in wrong.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = pillion_config(tmp_path, empty, "get")
    assert none.returncode == 2 and "found: none" in none.stderr


def test_init_gives_a_store_the_cli_finds(tmp_path):
    env = dict(os.environ, PILLION_DATA_DIR=str(tmp_path / "data"), PILLION_HOME=str(tmp_path / "home"))

    def pillion(*args):
        return subprocess.run(pillion_command(*args), env=env, capture_output=True, text=True, timeout=30)

    assert pillion("init").returncode == 0
    assert pillion("config", "set", "greeting=hello").returncode == 0
    out = pillion("config", "get", "greeting")
    assert out.returncode == 0 and out.stdout.startswith("greeting = hello")
