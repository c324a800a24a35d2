"""Fixtures that start real processes: sidecars (`python -m pillion ...`), an echo app, an MQTT broker."""

from __future__ import annotations

import sys

import pytest

from pillion._testing import Process, Sidecar, free_port, wait_for, http_status


class EchoApp(Process):
    def __init__(self, tmp, env=None, port=None):
        self.port = port or free_port()
        super().__init__([sys.executable, "-m", "pillion._testing.echo_app", str(self.port)],
                         tmp / f"echo-{self.port}.log", env=env)
        wait_for(lambda: http_status(self.port, "/healthz") == 200, what="echo app")


@pytest.fixture
def processes():
    started = []
    yield started
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def echo_app(tmp_path, processes):
    def start(env=None, port=None):
        app = EchoApp(tmp_path, env, port)
        processes.append(app)
        return app

    return start


@pytest.fixture
def sidecar(tmp_path, processes):
    def start(app_id="app", *args, **kwargs):
        proc = Sidecar(tmp_path, app_id, *args, **kwargs)
        processes.append(proc)
        return proc

    return start


@pytest.fixture(params=["state.lmdb", "state.in-memory"])
def store_type(request):
    """Each state store type: the state API tests run against every one."""
    return request.param


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A `pillion broker` process shared by a test module: its port."""
    from _mqtt import running_broker

    with running_broker(tmp_path_factory.mktemp("broker")) as proc:
        yield proc.port


@pytest.fixture
def clients():
    """A list for the test's MQTT `Client`s; all are closed afterwards."""
    from _mqtt import client_pool

    with client_pool() as made:
        yield made
