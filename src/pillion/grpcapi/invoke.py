"""InvokeService: service invocation through the same Invoker as ``/v1.0/invoke``.

daprd's gRPC rules for a call that reaches an HTTP app (``pkg/api/grpc`` InvokeService,
``pkg/messaging/v1``): the verb and query come from ``http_extension`` (no extension is
the verb ``NONE``, sent as it is), the body is ``data.value``, the content type is
``application/x-protobuf`` when ``data`` carries a type URL, and the call's gRPC metadata
become request headers (reserved keys get a ``dapr-`` prefix). The app's headers come back
as initial metadata, the permanent HTTP ones prefixed with ``dapr-``, plus
``dapr-http-status``. A non-2xx answer is a gRPC error: the status mapped from the HTTP
one, the HTTP reason phrase as message, and an ErrorInfo with ``http.code`` and the first
63 bytes of the body as ``http.error_message``.
"""

from __future__ import annotations

import re

from dapr.proto.common.v1 import common_pb2
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from ..api import invoke as http_invoke
from ..runtime.tracing.context import current
from .status import StatusCode

PROTOBUF = "application/x-protobuf"
HTTP_STATUS_KEY = "dapr-http-status"
_KEY = re.compile(r"[0-9a-z_.\-]+")  # what gRPC accepts as a metadata key
_MAX_DETAIL = 63  # daprd's maxMetadataValueLen for the ErrorInfo metadata value
_PSEUDO = frozenset((":method", ":scheme", ":path", ":authority"))
# Verb numbers to names; Verb.Name() is a Python call through protobuf's enum wrapper.
_VERBS = {number: name for name, number in common_pb2.HTTPExtension.Verb.items()}
_SKIP_REQUEST = frozenset(("content-type", "destination-app-id"))  # trace headers go on, as over HTTP
# The IANA permanent request headers daprd prefixes with ``dapr-`` on the way back (isPermanentHTTPHeader).
_PERMANENT = frozenset((
    "accept", "accept-charset", "accept-language", "accept-ranges", "connection", "keep-alive",
    "proxy-connection", "transfer-encoding", "upgrade", "cache-control", "content-type", "content-length",
    "cookie", "date", "expect", "from", "host", "if-match", "if-modified-since", "if-none-match",
    "if-schedule-tag-match", "if-unmodified-since", "max-forwards", "origin", "pragma", "referer", "via", "warning",
))
# daprd's CodeFromHTTPStatus: 2xx is OK, an unlisted status is UNKNOWN.
_CODE_BY_HTTP = {
    408: StatusCode.CANCELLED, 500: StatusCode.UNKNOWN, 400: StatusCode.INTERNAL,
    504: StatusCode.DEADLINE_EXCEEDED, 404: StatusCode.NOT_FOUND, 409: StatusCode.ALREADY_EXISTS,
    403: StatusCode.PERMISSION_DENIED, 401: StatusCode.UNAUTHENTICATED,
    429: StatusCode.RESOURCE_EXHAUSTED, 501: StatusCode.UNIMPLEMENTED, 503: StatusCode.UNAVAILABLE,
}


# Go's http.StatusText for the statuses an app can answer with outside 2xx ("" for the rest).
_STATUS_TEXT = {
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    305: "Use Proxy", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    409: "Conflict", 410: "Gone", 411: "Length Required", 412: "Precondition Failed",
    413: "Request Entity Too Large", 414: "Request URI Too Long", 415: "Unsupported Media Type",
    416: "Requested Range Not Satisfiable", 417: "Expectation Failed", 418: "I'm a teapot",
    421: "Misdirected Request", 422: "Unprocessable Entity", 423: "Locked", 424: "Failed Dependency",
    425: "Too Early", 426: "Upgrade Required", 428: "Precondition Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported", 506: "Variant Also Negotiates",
    507: "Insufficient Storage", 508: "Loop Detected", 510: "Not Extended", 511: "Network Authentication Required",
    100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints",
}


def dapr_prefixed(key: str) -> str:
    """daprd's ReservedGRPCMetadataToDaprPrefixHeader: pseudo-headers and ``grpc-*`` get ``dapr-``."""
    if key in _PSEUDO:
        return "dapr-" + key[1:]
    return "dapr-" + key if key.startswith("grpc-") else key


def _request_headers(context, content_type: str) -> list[tuple[bytes, bytes]]:
    span = current.get()  # this call's server span, when tracing records it: the callee continues from it
    headers = []
    for key, value in context.invocation_metadata() or ():
        key = key.lower()
        if key.endswith("-bin") or key in _SKIP_REQUEST or (span is not None and key == "traceparent"):
            continue
        headers.append((dapr_prefixed(key).encode(), value.encode() if isinstance(value, str) else value))
    if span is not None:
        headers.append((b"traceparent", span.context.traceparent().encode()))
    if content_type:
        headers.append((b"content-type", content_type.encode()))
    return headers


def _response_metadata(headers, status: int) -> tuple[tuple[str, str], ...]:
    out = []
    for key, value in headers:
        name = key.decode("latin-1").lower()
        if name.endswith("-bin") or name in ("traceparent", "tracestate", "destination-app-id", HTTP_STATUS_KEY):
            continue
        if name in _PERMANENT:
            name = "dapr-" + name
        text = value.decode("latin-1")
        if _KEY.fullmatch(name) and text.isprintable() and text.isascii():  # what gRPC metadata can carry
            out.append((name, text))
    out.append((HTTP_STATUS_KEY, str(status)))
    return tuple(out)


def _header(headers, name: bytes) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


async def _abort_http(context, status: int, body: bytes) -> None:
    """daprd's ErrorFromHTTPResponseCode."""
    code = _CODE_BY_HTTP.get(status, StatusCode.UNKNOWN)
    text = _STATUS_TEXT.get(status, "")
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=text, domain="dapr.io", metadata={
        "http.code": str(status), "http.error_message": body[:_MAX_DETAIL].decode("utf-8", "replace")}))
    rich = status_pb2.Status(code=code.value[0], message=text, details=[detail])
    await context.abort(code, text, trailing_metadata=(("grpc-status-details-bin", rich.SerializeToString()),))


async def invoke_service(sidecar, request, context):
    message = request.message
    verb = _VERBS.get(message.http_extension.verb) or common_pb2.HTTPExtension.Verb.Name(message.http_extension.verb)
    content_type = PROTOBUF if message.data.type_url else message.content_type
    response = await http_invoke.call(sidecar, request.id, message.method, verb, message.http_extension.querystring,
                                      _request_headers(context, content_type), message.data.value)
    await context.send_initial_metadata(_response_metadata(response.headers, response.status))
    if not 200 <= response.status < 300:
        await _abort_http(context, response.status, response.body)
    answer = common_pb2.InvokeResponse(content_type=_header(response.headers, b"content-type"))
    answer.data.value = response.body  # half the cost of building an Any to copy in
    return answer


METHODS = {"InvokeService": invoke_service}
