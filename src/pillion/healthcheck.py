"""``pillion healthcheck``: is the sidecar on this host ready?

Meant for a container ``HEALTHCHECK`` or a systemd ``ExecStartPost`` probe, so it imports
only the standard library (``http.client``) and none of the sidecar's modules: the probe
runs every few seconds and should cost a fraction of the sidecar's start-up. It asks
``GET /v1.0/healthz`` (204 when ready, like daprd) and exits 0 when healthy, 1 otherwise
with one line on stderr saying why.
"""

from __future__ import annotations

import argparse
import os
import sys

HEALTHZ_PATH = "/v1.0/healthz"


def default_port() -> int:
    """``DAPR_HTTP_PORT`` (what ``pillion run`` gives the app), else daprd's 3500."""
    raw = os.environ.get("DAPR_HTTP_PORT", "")
    try:
        port = int(raw)
    except ValueError:
        return 3500
    return port if 0 < port < 65536 else 3500


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Adds the flags to ``parser`` (the ``healthcheck`` subparser of the CLI) or a new one."""
    parser = parser or argparse.ArgumentParser(prog="pillion healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="sidecar HTTP port (default $DAPR_HTTP_PORT or 3500)")
    parser.add_argument("--host", default="127.0.0.1", help="sidecar address (default 127.0.0.1)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer (default 2)")
    return parser


def check(host: str, port: int, timeout: float) -> str | None:
    """None when the sidecar answers 204, else the reason it is not healthy."""
    import http.client  # here, not at the top: the CLI imports this module to build its parser

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", HEALTHZ_PATH, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read(200)
    except (OSError, http.client.HTTPException) as exc:
        return f"cannot reach the sidecar at {host}:{port}: {exc or type(exc).__name__}"
    finally:
        conn.close()
    if response.status == 204:
        return None
    detail = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return f"{HEALTHZ_PATH} answered {response.status} {response.reason}" + (f": {detail}" if detail else "")


def run(args: argparse.Namespace) -> int:
    """Exit code for parsed arguments (the CLI dispatches here)."""
    port = args.port if args.port is not None else default_port()
    reason = check(args.host, port, args.timeout)
    if reason is None:
        return 0
    print(f"pillion healthcheck: unhealthy: {reason}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
