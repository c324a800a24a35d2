"""Settings of the embedded broker, from ``spec.mqtt`` of a Configuration and from flags.

One dataclass for ``pillion broker`` and the broker inside the sidecar. The loader
(``config.loader``) validates ``spec.mqtt`` and returns these field names, so the YAML
and the flags meet here; flags given on the command line win over the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

DEFAULT_PORT = 1883
DEFAULT_MAX_CONNECTIONS = 4096


@dataclass
class BrokerOptions:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0: no plain TCP listener
    tls_host: str | None = None  # None: same as ``host``
    tls_port: int = 0  # 0: no TLS listener
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None  # with ``require_certificate``: clients must present one it signed
    require_certificate: bool = False
    password_file: str | None = None
    acl_file: str | None = None
    allow_anonymous: bool | None = None  # None: only when there is no password file
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # 0: no limit
    max_packet_size: int = 1024 * 1024
    max_queued: int = 1000
    receive_maximum: int = 100
    sys_interval: float = 10.0  # seconds between $SYS updates; 0: none
    persistence: bool = True  # retained messages and persistent sessions in LMDB under data_dir
    data_dir: str | None = None

    def merged(self, **overrides) -> BrokerOptions:
        """A copy with the non-None ``overrides`` applied (flags over file)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def anonymous_allowed(self) -> bool:
        return self.password_file is None if self.allow_anonymous is None else self.allow_anonymous

    def check(self) -> None:
        """Raise ValueError for settings that cannot work together."""
        if self.tls_port and not (self.cert_file and self.key_file):
            raise ValueError("a TLS listener needs certFile and keyFile")
        if self.require_certificate and not self.ca_file:
            raise ValueError("requireCertificate needs caFile")
        if not 0 <= self.port < 65536 or not 0 <= self.tls_port < 65536:
            raise ValueError("ports must be in 0..65535")


FIELDS = {f.name for f in dataclasses.fields(BrokerOptions)}
