"""TryLockAlpha1 and UnlockAlpha1: the lock API's functions; the checks and messages are the HTTP ones,
as daprd serves both fronts from one (universal) implementation."""

from __future__ import annotations

from dapr.proto.runtime.v1 import lock_pb2

from ..api import lock as http_lock


async def try_lock(sidecar, request, context):
    success = await http_lock.acquire(sidecar, request.store_name, request.resource_id, request.lock_owner,
                                      request.expiry_in_seconds)
    return lock_pb2.TryLockResponse(success=success)


async def unlock(sidecar, request, context):
    status = await http_lock.release(sidecar, request.store_name, request.resource_id, request.lock_owner)
    return lock_pb2.UnlockResponse(status=status)


METHODS = {"TryLockAlpha1": try_lock, "UnlockAlpha1": unlock}
