"""Request and response objects shared by the server, the dispatcher and the API.

Headers stay as the ``(name, value)`` byte pairs httptools delivered, in order and
in their original case, so that service invocation can pass them on unchanged.
``Request`` is a twin (pillion._ext.httpproto when built, else pillion._pure.httpproto):
the protocol builds one per request.
"""

from .._impl import load
from .response import NO_CONTENT, Headers, Response, status_line

Request = load("httpproto").Request

__all__ = ["NO_CONTENT", "Headers", "Request", "Response", "status_line"]
