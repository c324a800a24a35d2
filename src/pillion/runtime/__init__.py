"""Wiring: sidecar assembly, app channel, name resolution, lifecycle."""
