"""GetMetadata, SetMetadata and Shutdown: the HTTP API's answers as protobuf."""

from __future__ import annotations

from dapr.proto.runtime.v1 import metadata_pb2
from google.protobuf import empty_pb2

from ..api import metadata as http_metadata
from ..api import shutdown as http_shutdown

_EMPTY = empty_pb2.Empty()


def get_metadata(sidecar, request, context):
    info = sidecar.metadata()
    runtime = info["actorRuntime"]
    out = metadata_pb2.GetMetadataResponse(
        id=info["id"],
        runtime_version=info["runtimeVersion"],
        enabled_features=info["enabledFeatures"],
        active_actors_count=[metadata_pb2.ActiveActorsCount(type=a["type"], count=a["count"]) for a in info["actors"]],
        registered_components=[
            metadata_pb2.RegisteredComponents(name=c["name"], type=c["type"], version=c["version"],
                                              capabilities=c["capabilities"])
            for c in info["components"]
        ],
        extended_metadata=info["extended"],
        subscriptions=[_subscription(s) for s in info["subscriptions"]],
        http_endpoints=[metadata_pb2.MetadataHTTPEndpoint(name=e["name"]) for e in info["httpEndpoints"]],
        actor_runtime=metadata_pb2.ActorRuntime(
            runtime_status=metadata_pb2.ActorRuntime.ActorRuntimeStatus.Value(runtime["runtimeStatus"]),
            active_actors=[metadata_pb2.ActiveActorsCount(type=a["type"], count=a["count"])
                           for a in runtime.get("activeActors", ())],
            host_ready=runtime["hostReady"],
            placement=runtime["placement"],
        ),
    )
    conn = info.get("appConnectionProperties")
    if conn is not None:
        app = out.app_connection_properties
        app.port, app.protocol, app.channel_address = conn["port"], conn["protocol"], conn["channelAddress"]
        app.max_concurrency = conn.get("maxConcurrency", 0)
        health = conn.get("health")
        if health is not None:
            app.health.health_check_path = health["healthCheckPath"]
            app.health.health_probe_interval = health["healthProbeInterval"]
            app.health.health_probe_timeout = health["healthProbeTimeout"]
            app.health.health_threshold = health["healthThreshold"]
    return out


def _subscription(entry: dict):
    return metadata_pb2.PubsubSubscription(
        pubsub_name=entry["pubsubname"],
        topic=entry["topic"],
        metadata=entry.get("metadata") or {},
        rules=metadata_pb2.PubsubSubscriptionRules(
            rules=[metadata_pb2.PubsubSubscriptionRule(match=r.get("match", ""), path=r["path"])
                   for r in entry.get("rules", ())]),
        dead_letter_topic=entry["deadLetterTopic"],
        type=metadata_pb2.PubsubSubscriptionType.Value(entry["type"].upper()),
    )


def set_metadata(sidecar, request, context):
    http_metadata.set_attribute(sidecar, request.key, request.value)
    return _EMPTY


def shutdown(sidecar, request, context):
    http_shutdown.request(sidecar)
    return _EMPTY


METHODS = {"GetMetadata": get_metadata, "SetMetadata": set_metadata, "Shutdown": shutdown}
