"""The server's settings, with safe defaults, checked once at start-up."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from mecca.errors import ConfigError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def use_server_threads(threads: int | None = None) -> int:
    """Set torch's thread count for a server and return it: ``threads``, else half the CPU
    cores (at least 1).

    Why: the page's viewer renders on the same CPU when no GPU is there (software WebGL),
    and torch's OpenMP threads spin while they wait; on 2 cores, 2 torch threads made a
    MECCA step 3x slower beside Chromium than 1 thread (benchmarks/browser_latency.py).
    """
    import torch

    n = max(1, (os.cpu_count() or 2) // 2) if threads is None else int(threads)
    if n < 1:
        raise ConfigError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only reaches this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerSettings:
    """How ``mecca serve`` runs.

    Attributes:
        host: interface to bind; 127.0.0.1 by default. Any other interface needs
            ``allow_remote`` AND a ``token``.
        port: TCP port.
        token: shared secret; when set every API request needs
            ``Authorization: Bearer <token>`` (the page gets it from its URL once).
        allow_remote: explicit consent to bind a non-loopback interface.
        roots: folders whose images may be opened by a path relative to them; a client
            never names a server path, only ``(root index, relative path)``.
        state_dir: where sessions autosave (image, clicks, ROI, mask) and exports go.
        max_upload_bytes: largest request body (uploads included).
        max_voxels: largest image, in voxels, read from its header before any data.
        max_decompressed_bytes: largest total size of an upload's files once unpacked.
        session_ttl_s: idle seconds before a session is unloaded from memory (its saved
            state stays on disk and is reloaded on the next request).
        methods: methods offered (registry names); the first is the default.
        weights: (method, model) pairs: the model (run folder, checkpoint or bundle) a
            method loads instead of its shipped default; ``partial`` needs one.
        extra_hosts: Host header values accepted besides the bound host and loopback names.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    allow_remote: bool = False
    roots: tuple[Path, ...] = ()
    state_dir: Path = field(default_factory=lambda: Path.home() / ".mecca" / "server")
    max_upload_bytes: int = 1 << 30
    max_voxels: int = 512 * 512 * 512
    max_decompressed_bytes: int = 4 << 30
    session_ttl_s: float = 4 * 3600.0
    methods: tuple[str, ...] = (
        "mecca", "itermrl", "random_walker", "graphcut", "growcut", "geos", "region_growing"
    )
    weights: tuple[tuple[str, str], ...] = ()
    extra_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not is_loopback(self.host):
            if not self.allow_remote:
                raise ConfigError(
                    f"refusing to serve on {self.host}: only this machine (127.0.0.1) by default",
                    hint="pass --allow-remote and --token to serve on another interface",
                )
            if not self.token or len(self.token) < 16:
                raise ConfigError(
                    "serving on another interface needs a token of at least 16 characters",
                    hint="pass --token with a long random string, e.g. from: openssl rand -hex 24",
                )
        for name in ("max_upload_bytes", "max_voxels", "max_decompressed_bytes"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.session_ttl_s <= 0:
            raise ConfigError(f"session_ttl_s must be > 0, got {self.session_ttl_s}")
        if not self.methods:
            raise ConfigError("at least one method must be offered")

    def allowed_hosts(self) -> list[str]:
        """Host header values the server answers (DNS-rebinding guard)."""
        hosts = {self.host, *LOOPBACK_NAMES, "[::1]", *self.extra_hosts}
        return sorted(hosts)
