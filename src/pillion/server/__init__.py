"""HTTP: the sidecar's server, its router and its outbound client. Knows nothing of building blocks."""
