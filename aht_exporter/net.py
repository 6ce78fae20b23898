"""Network facts the config and the providers both need, kept below both so that neither imports the other
for them."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine: `localhost` or a loopback address (127.0.0.0/8, ::1). Only a
    loopback host may be reached over plain http without `allow_insecure_http` (the simulators, a tunnel)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
