"""Whether the Hugging Face hub can be reached, found out once per process without retries.

Downloading through `huggingface_hub` with no network retries five times and logs a dozen lines
before failing. ditkit asks here first: `HF_HUB_OFFLINE` set means offline, else one TCP connection
to the hub's host (`HF_ENDPOINT`, default huggingface.co) with a short timeout decides.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

DEFAULT_ENDPOINT = "https://huggingface.co"
# Seconds to wait for the hub's host to answer: generous for a slow link, short for a firewall.
PROBE_TIMEOUT_SECONDS = 5.0
_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_endpoint() -> str:
    """The hub's address (`HF_ENDPOINT`, as `huggingface_hub` reads it)."""
    return os.environ.get("HF_ENDPOINT", "").strip() or DEFAULT_ENDPOINT


def hub_offline() -> bool:
    """True when the user asked for no network (`HF_HUB_OFFLINE`, or `huggingface_hub`'s own setting)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hub_unreachable_reason() -> str | None:
    """Why the hub cannot be used now ("HF_HUB_OFFLINE is set", "no route to host"...), or None if it can."""
    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    return _probe(hub_endpoint())


def unreachable_reason(endpoint: str) -> str | None:
    """Why another host (e.g. torch.hub's github.com) cannot be reached now, or None if it can; the
    same one-connection probe, found out once per process."""
    return _probe(endpoint)


@functools.cache
def _probe(endpoint: str) -> str | None:
    url = urlparse(endpoint)
    host = url.hostname
    if not host:
        return f"HF_ENDPOINT {endpoint!r} is not a URL"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_SECONDS).close()
    except OSError as err:
        return f"cannot connect to {host}:{port}: {err.strerror or type(err).__name__}"
    return None
