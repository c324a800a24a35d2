"""The server-wide budget of request body bytes, in both twins: a connection whose body would
pass it stops reading until answered requests free their bytes; nothing is held after."""

from __future__ import annotations

import asyncio

import pytest

from pillion._testing import import_twin
from pillion.server.http import Response
from pillion.server.protocol import HttpServer, Limits


class Transport:
    def __init__(self, name: str, log: list):
        self.name = name
        self.log = log
        self.paused = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.log.append((self.name, "write", data.split(b"\r\n")[0]))

    def pause_reading(self):
        self.paused = True
        self.log.append((self.name, "pause"))

    def resume_reading(self):
        self.paused = False
        self.log.append((self.name, "resume"))

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def get_extra_info(self, name, default=None):
        return default


def _scenario(module) -> tuple[list, int]:
    log: list = []

    async def main():
        release = asyncio.Event()

        async def slow(request):
            await release.wait()
            return Response(200)

        def handler(request):
            log.append(("handled", request.path, len(request.body)))
            return slow(request) if request.path == "/slow" else Response(200)

        server = HttpServer(handler, Limits(max_body=1000, body_budget=100), protocol=module.HttpProtocol)
        conns = {}
        for name in "abc":
            conn = conns[name] = module.HttpProtocol(server)
            conn.connection_made(Transport(name, log))
        conns["a"].data_received(b"POST /slow HTTP/1.1\r\nContent-Length: 80\r\n\r\n" + b"a" * 80)
        conns["b"].data_received(b"POST /b HTTP/1.1\r\nContent-Length: 50\r\n\r\n")  # 80 + 50 > 100: waits
        conns["c"].data_received(b"POST /c HTTP/1.1\r\nContent-Length: 10\r\n\r\n")  # fits, but b came first
        assert conns["b"].transport.paused and conns["c"].transport.paused
        release.set()
        for _ in range(5):
            await asyncio.sleep(0)
        for name, body in (("b", b"b" * 50), ("c", b"c" * 10)):
            assert not conns[name].transport.paused
            conns[name].data_received(body)
        held = server.budget.held
        for conn in conns.values():
            conn.connection_lost(None)
        return held

    held = asyncio.run(main())
    return log, held


@pytest.mark.parametrize("kind", ["pure", "compiled"])
def test_a_body_past_the_budget_waits_its_turn(kind):
    log, held = _scenario(import_twin("httpproto", kind))
    assert held == 0  # every admitted body was released with its answer
    order = [entry for entry in log if entry[0] == "handled" or entry[1:] in (("pause",), ("resume",))]
    assert order == [
        ("handled", "/slow", 80), ("b", "pause"), ("c", "pause"),
        ("b", "resume"), ("c", "resume"),  # /slow answered: 80 bytes free, b (50) then c (10) fit
        ("handled", "/b", 50), ("handled", "/c", 10),
    ]


def test_twins_agree_on_the_budget():
    assert _scenario(import_twin("httpproto", "pure")) == _scenario(import_twin("httpproto", "compiled"))


def test_budget_rules():
    from pillion.server.protocol import BodyBudget

    class Conn:
        def __init__(self):
            self.granted = 0

        def budget_granted(self, length):
            self.granted += length

    budget = BodyBudget(100)
    big, small, other = Conn(), Conn(), Conn()
    assert budget.admit(big, 500)  # nothing held: any one body gets through
    assert not budget.admit(small, 1) and not budget.admit(other, 1)
    budget.leave(small, 0)  # closed while waiting: forgotten
    budget.release(500)
    assert (small.granted, other.granted, budget.held) == (0, 1, 1)
    budget.leave(other, 1)
    assert budget.held == 0 and not budget.waiting
