"""systemd integration: sd_notify and the watchdog, unit files, ``init --system``, ``doctor``.

Nothing here is imported by a sidecar that does not run under systemd: the CLI imports
``notify`` only when ``NOTIFY_SOCKET`` is set.
"""
