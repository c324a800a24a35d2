"""Resource and Configuration files: parsing and validation, nothing that runs them."""

from .durations import parse_duration
from .loader import load_configuration, load_resources, parse_trip
from .manifests import (
    Component,
    Configuration,
    HTTPEndpoint,
    MetadataItem,
    Resiliency,
    Resources,
    SecretKeyRef,
    Source,
    Subscription,
)

__all__ = [
    "Component",
    "Configuration",
    "HTTPEndpoint",
    "MetadataItem",
    "Resiliency",
    "Resources",
    "SecretKeyRef",
    "Source",
    "Subscription",
    "load_configuration",
    "load_resources",
    "parse_duration",
    "parse_trip",
]
