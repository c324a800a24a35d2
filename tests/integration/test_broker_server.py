"""`pillion broker` as an operator runs it: LMDB persistence across kill -9, TLS, password and
ACL files, connection limits, $SYS, the Configuration file, and the broker inside the sidecar."""

from __future__ import annotations

import queue
import signal
import subprocess
import time
import uuid

import pytest

mqtt = pytest.importorskip("paho.mqtt.client")

from _http import json_request  # noqa: E402
from _mqtt import V5, V311, BrokerProcess, Client, client_pool, running_broker  # noqa: E402

from pillion._testing import Sidecar, free_port, pillion_command, wait_for  # noqa: E402


def _topic(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def _paho(port: int, protocol=V311, *, client_id: str | None = None, username=None, password=None, tls_ca=None,
          clean: bool = True):
    """A started paho client and the queue its CONNACK reason lands in (no wait for success)."""
    kwargs = {"clean_session": clean} if protocol == V311 else {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or _topic("c").replace("/", "-"),
                         protocol=protocol, **kwargs)
    connacks: queue.Queue = queue.Queue()
    client.on_connect = lambda c, u, flags, reason, props: connacks.put(reason)
    if username is not None:
        client.username_pw_set(username, password)
    if tls_ca is not None:
        client.tls_set(ca_certs=str(tls_ca))
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    return client, connacks


# -- persistence ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", [V311, V5], ids=["3.1.1", "5.0"])
def test_acknowledged_messages_survive_kill_9(tmp_path, protocol):
    """Every QoS 1/2 message PUBACKed/PUBCOMPed to its publisher reaches the persistent
    subscriber after the broker is killed and restarted, and so does the retained one."""
    data = tmp_path / "data"
    topic = _topic("persist")
    sub_id = "persistent-" + uuid.uuid4().hex[:6]
    broker = BrokerProcess(tmp_path, "--data-dir", str(data))
    try:
        with client_pool() as clients:
            sub = Client(broker.port, protocol, client_id=sub_id, clean=False)
            clients.append(sub)
            sub.subscribe(topic + "/#", 2)
            sub.close()
            pub = Client(broker.port, protocol)
            clients.append(pub)
            for n in range(100):
                pub.publish(f"{topic}/q1", b"one-%d" % n, qos=1)
                pub.publish(f"{topic}/q2", b"two-%d" % n, qos=2)
            pub.publish(f"{topic}/state", b"retained", qos=1, retain=True)
        broker.stop(signal.SIGKILL)
    finally:
        broker.stop()
    with running_broker(tmp_path, "--data-dir", str(data)) as broker, client_pool() as clients:
        sub = Client(broker.port, protocol, client_id=sub_id, clean=False)
        clients.append(sub)
        got = [sub.get(timeout=10) for _ in range(201)]
        by_topic: dict[str, list[bytes]] = {}
        for message in got:
            by_topic.setdefault(message.topic.rsplit("/", 1)[1], []).append(message.payload)
        assert by_topic["q1"] == [b"one-%d" % n for n in range(100)]
        assert by_topic["q2"] == [b"two-%d" % n for n in range(100)]
        assert by_topic["state"] == [b"retained"]
        assert sub.nothing()
        late = Client(broker.port, protocol)
        clients.append(late)
        late.subscribe(f"{topic}/state", 1)
        assert late.get().payload == b"retained"


@pytest.mark.timeout(60)
def test_a_clean_session_leaves_nothing_behind(tmp_path):
    data = tmp_path / "data"
    topic = _topic("clean")
    with running_broker(tmp_path, "--data-dir", str(data)) as broker, client_pool() as clients:
        sub = Client(broker.port, V311, client_id="gone", clean=False)
        clients.append(sub)
        sub.subscribe(topic, 1)
        sub.close()
        pub = Client(broker.port, V311)
        clients.append(pub)
        pub.publish(topic, b"queued", qos=1)
        clean = Client(broker.port, V311, client_id="gone", clean=True)  # discards the stored session
        clients.append(clean)
        assert clean.nothing()
    with running_broker(tmp_path, "--data-dir", str(data)) as broker, client_pool() as clients:
        again = Client(broker.port, V311, client_id="gone", clean=False)
        clients.append(again)
        assert again.nothing(0.5)


def test_two_brokers_cannot_share_a_data_dir(tmp_path):
    data = tmp_path / "data"
    with running_broker(tmp_path, "--data-dir", str(data)):
        second = subprocess.run(pillion_command("broker", "--port", str(free_port()), "--data-dir", str(data)),
                                capture_output=True, text=True, timeout=30)
    assert second.returncode == 1
    assert "in use by another process" in second.stderr


# -- security ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    where = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(where / "key.pem"), "-out", str(where / "cert.pem")],
                   check=True, capture_output=True)
    return where / "cert.pem", where / "key.pem"


def test_tls_listener(tmp_path, certificate):
    cert, key = certificate
    tls_port = free_port()
    with running_broker(tmp_path, "--tls-port", str(tls_port), "--cert-file", str(cert), "--key-file", str(key)):
        topic = _topic("tls")
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(tls_port), "--cafile", str(cert),
                                "-t", topic, "-C", "1", "-W", "10"], stdout=subprocess.PIPE, text=True)
        client, connacks = _paho(tls_port, tls_ca=cert)
        try:
            assert connacks.get(timeout=5) == 0
            wait_for(lambda: _published(client, topic, sub), what="TLS subscriber got the message", timeout=10)
            assert sub.stdout.read().strip() == "over tls"
        finally:
            client.disconnect()
            client.loop_stop()
            sub.kill()


def test_tls_client_certificates(tmp_path, certificate):
    """With requireCertificate, a client without a certificate the CA signed cannot connect."""
    cert, key = certificate
    tls_port = free_port()
    with running_broker(tmp_path, "--config", str(_config(tmp_path, f"""
    tlsPort: {tls_port}
    certFile: {cert}
    keyFile: {key}
    caFile: {cert}
    requireCertificate: true"""))):
        topic = _topic("mtls")
        base = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(tls_port), "--cafile", str(cert), "-t", topic, "-m", "x"]
        with_cert = subprocess.run([*base, "--cert", str(cert), "--key", str(key)], capture_output=True, timeout=10)
        assert with_cert.returncode == 0, with_cert.stderr
        without = subprocess.run(base, capture_output=True, timeout=10)
        assert without.returncode != 0


def _config(where, mqtt_section: str):
    path = where / "config.yaml"
    path.write_text("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\nspec:\n  mqtt:"
                    + mqtt_section + "\n")
    return path


def _published(client, topic: str, sub: subprocess.Popen) -> bool:
    client.publish(topic, b"over tls", qos=1).wait_for_publish(timeout=5)
    try:
        sub.wait(timeout=0.3)
    except subprocess.TimeoutExpired:
        return False
    return sub.returncode == 0


def test_passwords_and_acl(tmp_path):
    passwords = tmp_path / "passwd"
    for user, password in (("alice", "wonderland"), ("sensor", "s3cret")):
        subprocess.run(pillion_command("passwd", str(passwords), user, "-b", password), check=True)
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic read sensors/#\n"
                   "pattern write sensors/%u/#\n")
    with running_broker(tmp_path, "--password-file", str(passwords), "--acl-file", str(acl)) as broker:
        # paho reports a 3.1.1 return code 5 (not authorized) as reason 0x87 too.
        for protocol, bad_password in ((V311, 0x87), (V5, 0x86)):
            client, connacks = _paho(broker.port, protocol, username="alice", password="wrong")
            assert connacks.get(timeout=5).value == bad_password
            client.loop_stop()
            anonymous, connacks = _paho(broker.port, protocol)
            assert connacks.get(timeout=5).value == 0x87
            anonymous.loop_stop()
        with client_pool() as clients:
            alice = Client(broker.port, V5, username="alice", password="wonderland")
            sensor = Client(broker.port, V5, username="sensor", password="s3cret")
            clients += [alice, sensor]
            assert [code.value for code in alice.subscribe("sensors/#", 1)] == [1]
            assert [code.value for code in alice.subscribe("other/#", 1)] == [0x87]
            sensor.publish("sensors/sensor/t", b"21", qos=1)  # allowed by the %u pattern
            sensor.publish("sensors/alice/t", b"forged", qos=1)  # not its own subtree: refused
            assert alice.get().payload == b"21"
            assert alice.nothing()


# -- limits, $SYS, configuration ----------------------------------------------------------------


def test_max_connections(tmp_path):
    with running_broker(tmp_path, "--max-connections", "3") as broker, client_pool() as clients:
        clients += [Client(broker.port, V311) for _ in range(3)]
        extra, connacks = _paho(broker.port)
        try:
            with pytest.raises(queue.Empty):
                connacks.get(timeout=1)
            assert not extra.is_connected()
        finally:
            extra.loop_stop()
        clients.pop().close()
        wait_for(lambda: _connects(broker.port), what="a slot freed by a disconnect", timeout=10)


def _connects(port: int) -> bool:
    client, connacks = _paho(port)
    try:
        return connacks.get(timeout=1) == 0
    except queue.Empty:
        return False
    finally:
        client.disconnect()
        client.loop_stop()


def test_sys_topics(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\n"
                      "spec:\n  mqtt:\n    sysInterval: 1s\n")
    with running_broker(tmp_path, "--config", str(config)) as broker, client_pool() as clients:
        watcher = Client(broker.port, V311)
        clients.append(watcher)
        watcher.subscribe("$SYS/broker/clients/connected", 0)
        assert watcher.get().retain  # the last value published, at once
        _until(watcher, b"1")
        clients.append(Client(broker.port, V311))
        _until(watcher, b"2")
        wildcard = Client(broker.port, V311)
        clients.append(wildcard)
        wildcard.subscribe("#", 0)
        assert wildcard.nothing(1.5)  # $SYS is not matched by a leading wildcard


def _until(client: Client, payload: bytes, timeout: float = 5.0) -> None:
    """Updates come every sysInterval; wait for the one that says ``payload``."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(client.get(timeout=deadline - time.monotonic()).payload)
        if seen[-1] == payload:
            return
    raise AssertionError(f"never got {payload!r}; saw {seen}")


def test_bad_configuration_exits_2(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\n"
                      "spec:\n  mqtt:\n    maxPacketSize: lots\n")
    result = subprocess.run(pillion_command("broker", "--config", str(config)), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "spec.mqtt.maxPacketSize" in result.stderr
    result = subprocess.run(pillion_command("broker", "--tls-port", "8883"), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "certFile and keyFile" in result.stderr


# -- inside the sidecar -------------------------------------------------------------------------


def test_the_sidecar_runs_the_broker(tmp_path):
    port = free_port()
    sidecar = Sidecar(tmp_path, "mqtt-app", "--mqtt-port", str(port))
    try:
        status, _, metadata = json_request(sidecar.http_port, "GET", "/v1.0/metadata")
        assert status == 200 and metadata["extended"]["mqttPort"] == str(port)
        topic = _topic("sidecar")
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-t", topic, "-C", "1", "-W", "10"],
                               stdout=subprocess.PIPE, text=True)
        wait_for(lambda: _mosquitto_pub(port, topic, "hi") and sub.poll() is not None,
                 what="message through the sidecar")
        assert sub.stdout.read().strip() == "hi"
        assert "Traceback" not in sidecar.output()
    finally:
        assert sidecar.stop() == 0


def test_sidecars_sharing_a_port_and_a_data_dir(tmp_path):
    """The second sidecar finds the port held by another Pillion and the store taken, says so, and runs."""
    port = free_port()
    first = Sidecar(tmp_path, "first", "--mqtt-port", str(port))
    second = None
    try:
        second = Sidecar(tmp_path, "second", "--mqtt-port", str(port))
        log = second.output()
        assert f"MQTT port {port} belongs to another Pillion" in log and "in use by another process" in log
        assert _mosquitto_pub(port, _topic("shared"), "to the first")
    finally:
        if second is not None:
            assert second.stop() == 0
        assert first.stop() == 0


def _mosquitto_pub(port: int, topic: str, message: str) -> bool:
    subprocess.run(["mosquitto_pub", "-p", str(port), "-t", topic, "-m", message, "-q", "1"], check=True, timeout=10)
    return True
