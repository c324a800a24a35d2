"""GetSecret and GetBulkSecret: the secrets API's functions, the answers as protobuf maps."""

from __future__ import annotations

from dapr.proto.runtime.v1 import secret_pb2

from ..api import secrets as http_secrets


def get_secret(sidecar, request, context):
    data = http_secrets.read_secret(sidecar, request.store_name, request.key, dict(request.metadata))
    return secret_pb2.GetSecretResponse(data=data)


def get_bulk_secret(sidecar, request, context):
    data = http_secrets.read_bulk(sidecar, request.store_name, dict(request.metadata))
    return secret_pb2.GetBulkSecretResponse(
        data={key: secret_pb2.SecretResponse(secrets=secret) for key, secret in data.items()})


METHODS = {"GetSecret": get_secret, "GetBulkSecret": get_bulk_secret}
