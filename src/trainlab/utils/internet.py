"""One quick question before anything waits on the network: does this host answer at all?

Libraries retry unreachable hosts for a long time (torchvision's mirrors, the Hugging Face hub,
W&B's ~2 minutes of retries before it crashes); on an offline machine that looks like a hang.
Every such place asks `host_reachable` first, with the same short timeout.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0


def host_reachable(url: str, timeout: float | None = None, use_proxy: bool = True) -> bool:
    """Whether the URL's host accepts a TCP connection within `timeout` seconds (default
    PROBE_TIMEOUT_S), through the HTTPS proxy when one is set and `use_proxy`."""
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    proxy = (os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")) if use_proxy else None
    target = urlparse(proxy if proxy else url)
    host, port = target.hostname, target.port or (80 if target.scheme == "http" else 443)
    if not host:
        return False
    answer: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    # a thread bounds the wait also where name resolution hangs (socket timeouts do not cover it)
    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout + 1.0)
    return bool(answer and answer[0])
