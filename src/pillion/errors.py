"""Every error Pillion returns to a client, in one place.

``ERRORS`` is the table of Dapr error codes with their HTTP status. Handlers raise
``DaprError(code, message)``; the HTTP server turns it into Dapr's body
``{"errorCode": ..., "message": ...}`` in ``render``, and nowhere else; the gRPC front
takes its status from ``grpc_code``.
"""

from __future__ import annotations

import orjson


class PillionError(Exception):
    """Root of every exception Pillion raises on purpose."""


class ConfigError(PillionError):
    """A resource or configuration file is unusable; start-up stops with exit code 2."""

    def __init__(self, file: str, document: int | None, field: str, expected: str):
        self.file = file
        self.document = document
        self.field = field
        self.expected = expected
        where = file if document is None else f"{file} (document {document})"
        super().__init__(f"{where}: field '{field}': {expected}")


# errorCode -> HTTP status (Dapr 1.16 code, not the docs, where they disagree).
ERRORS: dict[str, int] = {
    "ERROR": 500,
    "ERR_BAD_REQUEST": 400,
    "ERR_MALFORMED_REQUEST": 400,
    "ERR_BODY_READ": 400,
    "ERR_METHOD_NOT_ALLOWED": 405,
    "ERR_API_UNIMPLEMENTED": 501,
    "ERR_DIRECT_INVOKE": 500,
    "ERR_HEALTH_NOT_READY": 500,
    "ERR_HEALTH_APPID_NOT_MATCH": 500,
    "ERR_OUTBOUND_HEALTH_NOT_READY": 500,
    "ERR_METADATA_SET": 400,
    "ERR_STATE_STORE_NOT_FOUND": 400,
    "ERR_STATE_STORE_NOT_CONFIGURED": 500,
    "ERR_STATE_STORE_NOT_SUPPORTED": 500,
    "ERR_STATE_GET": 500,
    "ERR_STATE_SAVE": 500,
    "ERR_STATE_DELETE": 500,
    "ERR_STATE_BULK_GET": 500,
    "ERR_STATE_TRANSACTION": 500,
    "ERR_STATE_QUERY": 500,
    "ERR_NOT_SUPPORTED_STATE_OPERATION": 400,
    "ERR_STATE_STORE_TOO_MANY_TRANSACTIONS": 400,
    "ERR_PUBSUB_NOT_FOUND": 404,
    "ERR_PUBSUB_NOT_CONFIGURED": 400,
    "ERR_PUBSUB_EMPTY": 404,
    "ERR_TOPIC_NAME_EMPTY": 404,
    "ERR_PUBSUB_REQUEST_METADATA": 400,
    "ERR_PUBSUB_FORBIDDEN": 403,
    "ERR_PUBSUB_PUBLISH_MESSAGE": 500,
    "ERR_PUBSUB_CLOUD_EVENTS_SER": 500,
    "ERR_PUBSUB_EVENTS_SER": 400,
    "ERR_ACTOR_INSTANCE_MISSING": 400,
    "ERR_ACTOR_INVOKE_METHOD": 500,
    "ERR_ACTOR_STATE_GET": 500,
    "ERR_ACTOR_STATE_TRANSACTION_SAVE": 500,
    "ERR_ACTOR_REMINDER_CREATE": 500,
    "ERR_ACTOR_REMINDER_GET": 500,
    "ERR_ACTOR_REMINDER_DELETE": 500,
    "ERR_ACTOR_REMINDER_NON_HOSTED": 403,
    "ERR_ACTOR_TIMER_CREATE": 500,
    "ERR_ACTOR_STACK_DEPTH": 500,
    "ERR_ACTOR_RUNTIME_NOT_FOUND": 500,
    "ERR_INVOKE_OUTPUT_BINDING": 500,
    "ERR_LOCK_STORE_NOT_CONFIGURED": 500,
    "ERR_LOCK_STORE_NOT_FOUND": 400,
    "ERR_TRY_LOCK": 500,
    "ERR_UNLOCK": 500,
    "ERR_SECRET_STORES_NOT_CONFIGURED": 500,
    "ERR_SECRET_STORE_NOT_FOUND": 401,
    "ERR_PERMISSION_DENIED": 403,
    "ERR_SECRET_GET": 500,
    "ERR_CONFIGURATION_STORE_NOT_CONFIGURED": 500,
    "ERR_CONFIGURATION_STORE_NOT_FOUND": 400,
    "ERR_CONFIGURATION_GET": 500,
    "ERR_CONFIGURATION_SUBSCRIBE": 500,
    "ERR_APP_CHANNEL_NIL": 500,
}


# gRPC status (grpc.StatusCode names) of the codes whose gRPC status daprd does not derive
# from the HTTP one the way ``grpc_code`` does (pkg/messages/predefined.go).
GRPC_CODES: dict[str, str] = {
    "ERR_STATE_STORE_NOT_CONFIGURED": "FAILED_PRECONDITION",
    "ERR_PUBSUB_NOT_CONFIGURED": "FAILED_PRECONDITION",
    "ERR_SECRET_STORES_NOT_CONFIGURED": "FAILED_PRECONDITION",
    "ERR_CONFIGURATION_STORE_NOT_CONFIGURED": "FAILED_PRECONDITION",
    "ERR_LOCK_STORE_NOT_CONFIGURED": "FAILED_PRECONDITION",
    "ERR_APP_CHANNEL_NIL": "FAILED_PRECONDITION",
    "ERR_PUBSUB_NOT_FOUND": "INVALID_ARGUMENT",
    "ERR_PUBSUB_EMPTY": "INVALID_ARGUMENT",
    "ERR_TOPIC_NAME_EMPTY": "INVALID_ARGUMENT",
    "ERR_PUBSUB_CLOUD_EVENTS_SER": "INVALID_ARGUMENT",
    "ERR_SECRET_STORE_NOT_FOUND": "INVALID_ARGUMENT",
    "ERR_DIRECT_INVOKE": "INTERNAL",
    "ERR_NOT_SUPPORTED_STATE_OPERATION": "UNIMPLEMENTED",
    "ERR_STATE_STORE_NOT_SUPPORTED": "UNIMPLEMENTED",
    "ERR_CONFIGURATION_SUBSCRIBE": "INVALID_ARGUMENT",
    "ERR_ACTOR_INSTANCE_MISSING": "INTERNAL",
}

_GRPC_BY_HTTP = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 405: "UNIMPLEMENTED", 408: "DEADLINE_EXCEEDED", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED",
                 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


# daprd's HTTP status for a gRPC status (grpc-gateway's table): a gRPC app's failed invocation
# answered to an HTTP caller, and the status of a gRPC server span.
HTTP_BY_GRPC = {"OK": 200, "CANCELLED": 408, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
                "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401,
                "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400,
                "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500}


def grpc_code(error: "DaprError") -> str:
    """The gRPC status daprd answers with for ``error`` (an ETag mismatch, 409, is ABORTED)."""
    return GRPC_CODES.get(error.code) or _GRPC_BY_HTTP.get(error.status, "INTERNAL")


class DaprError(PillionError):
    """An error with a Dapr ``errorCode``; the status comes from ``ERRORS`` unless given."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = ERRORS[code] if status is None else status
        self.headers: list[tuple[bytes, bytes]] = []

    def with_headers(self, headers: list[tuple[bytes, bytes]]) -> "DaprError":
        """Extra response headers (``Allow`` on 405, ``metadata.*`` later)."""
        self.headers = headers
        return self


def render(code: str, message: str) -> bytes:
    """Dapr's legacy error body."""
    return orjson.dumps({"errorCode": code, "message": message})
