"""``secretstores.local.env``: secrets from the sidecar's environment variables.

Like daprd's store: each variable is a single-valued secret, read when asked (not
copied at start); metadata ``prefix`` (case-sensitive) limits the store to the
variables starting with it and is left out of secret names, so with prefix
``APP_`` secret ``DB`` reads ``APP_DB``. Variables named ``DAPR_*`` and
``APP_API_TOKEN`` (any case) hold the sidecar's own tokens and are never served:
a get answers "" and bulk leaves them out. A variable that is not set also
answers "" rather than an error, as in daprd.
"""

from __future__ import annotations

import os

from ...config.manifests import Component


class LocalEnvSecretStore:
    def __init__(self, component: Component, context=None):
        self.name = component.name
        self.prefix = next((m.value or "" for m in component.metadata
                            if m.name.lower() == "prefix" and m.value is not None), "")

    def get(self, key: str, metadata: dict[str, str] | None = None) -> dict[str, str] | None:
        name = self.prefix + key
        return {key: os.environ.get(name, "") if _allowed(name) else ""}

    def bulk(self, metadata: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
        prefix = self.prefix
        out: dict[str, dict[str, str]] = {}
        for name, value in os.environ.items():
            if prefix and (len(name) <= len(prefix) or not name.startswith(prefix)):
                continue
            if _allowed(name):
                short = name[len(prefix):]
                out[short] = {short: value}
        return out

    def features(self) -> frozenset[str]:
        return frozenset()


def _allowed(name: str) -> bool:
    upper = name.upper()
    return upper != "APP_API_TOKEN" and not upper.startswith("DAPR_")
