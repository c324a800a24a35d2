"""The compiled twins are what actually runs, unless PILLION_NO_EXTENSIONS says otherwise.

This is the guard against a CI that passes with the ``.so`` missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pillion
from pillion import _impl

NO_EXTENSIONS = os.environ.get("PILLION_NO_EXTENSIONS", "") not in ("", "0")


@pytest.mark.skipif(NO_EXTENSIONS, reason="PILLION_NO_EXTENSIONS is set")
def test_router_is_compiled():
    from pillion.server.router import Router

    assert Router.__module__ == "pillion._ext.router"
    assert sys.modules[Router.__module__].__file__.endswith(".so")
    assert _impl.loaded()["router"] == "compiled"


@pytest.mark.skipif(NO_EXTENSIONS, reason="PILLION_NO_EXTENSIONS is set")
def test_http_protocol_is_compiled():
    from pillion.server.http import Request
    from pillion.server.protocol import HttpProtocol, HttpServer, error_bytes

    for obj in (HttpProtocol, Request):
        assert obj.__module__ == "pillion._ext.httpproto"
    assert sys.modules["pillion._ext.httpproto"].__file__.endswith(".so")
    assert error_bytes is sys.modules["pillion._ext.httpproto"].error_bytes
    assert HttpServer(lambda request: None).protocol is HttpProtocol
    assert _impl.loaded()["httpproto"] == "compiled"


@pytest.mark.skipif(NO_EXTENSIONS, reason="PILLION_NO_EXTENSIONS is set")
def test_mqtt_codec_and_topic_trie_are_compiled():
    from pillion.broker import codec, topics

    ext_codec = sys.modules["pillion._ext.mqttcodec"]
    ext_trie = sys.modules["pillion._ext.topictrie"]
    assert ext_codec.__file__.endswith(".so") and ext_trie.__file__.endswith(".so")
    assert codec.decode is ext_codec.decode and codec.encode is ext_codec.encode
    assert topics.TopicTrie is ext_trie.TopicTrie
    assert topics.validate_filter is ext_trie.validate_filter
    assert _impl.loaded()["mqttcodec"] == "compiled"
    assert _impl.loaded()["topictrie"] == "compiled"
    assert __import__("pillion.cloudevents").cloudevents.envelope.__module__ == "pillion._ext.cloudevents"
    assert __import__("pillion.runtime.actorlock").runtime.actorlock.TurnLocks.__module__ == "pillion._ext.actorlock"


def test_no_extensions_selects_every_pure_twin():
    env = dict(os.environ, PILLION_NO_EXTENSIONS="1")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(pillion.__file__).parents[1]), env.get("PYTHONPATH")])
    )
    code = (
        "from pillion import _impl\n"
        "from pillion.server.router import Router\n"
        "from pillion.server.protocol import HttpProtocol\n"
        "from pillion.server.http import Request\n"
        "from pillion.broker import codec, topics\n"
        "print(Router.__module__, HttpProtocol.__module__, Request.__module__,\n"
        "      codec.decode.__module__, topics.TopicTrie.__module__, sorted(_impl.loaded().items()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.split(None, 5) == [
        "pillion._pure.router", "pillion._pure.httpproto", "pillion._pure.httpproto",
        "pillion._pure.mqttcodec", "pillion._pure.topictrie",
        "[('httpproto', 'pure'), ('mqttcodec', 'pure'), ('router', 'pure'), ('topictrie', 'pure')]\n",
    ]


@pytest.mark.skipif(NO_EXTENSIONS, reason="PILLION_NO_EXTENSIONS is set")
def test_h2_is_compiled():
    pytest.importorskip("hpack", reason="the grpc extra (pip install 'pillion[grpc]': hpack) is not installed")
    from pillion.grpcapi import h2

    assert h2.H2Connection.__module__ == "pillion._ext.h2"
    assert sys.modules["pillion._ext.h2"].__file__.endswith(".so")
    assert _impl.loaded()["h2"] == "compiled"


@pytest.mark.skipif(NO_EXTENSIONS, reason="PILLION_NO_EXTENSIONS is set")
def test_grpc_protocol_is_compiled():
    pytest.importorskip("hpack", reason="the grpc extra (pip install 'pillion[grpc]': hpack) is not installed")
    from pillion.grpcapi import transport

    for obj in (transport.GrpcProtocol, transport.Rpc, transport.Context):
        assert obj.__module__ == "pillion._ext.grpcproto"
    assert sys.modules["pillion._ext.grpcproto"].__file__.endswith(".so")
    assert _impl.loaded()["grpcproto"] == "compiled"
