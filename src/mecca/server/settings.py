"""The server's settings, with safe defaults, checked once at start-up."""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from mecca.errors import ConfigError
from mecca.methods import served

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]")
"""Bind addresses meaning every interface: the Host header then names no one host."""
TOKEN_HINT = "openssl rand -hex 24"
MIN_TOKEN_CHARS = 16
MIN_TOKEN_BITS = 64.0
MIN_TOKEN_DISTINCT = 8


def use_server_threads(threads: int | None = None) -> int:
    """Set torch's thread count for a server and return it: ``threads``, else half the CPU
    cores, at least 2 (1 on one core).

    Why: the page's viewer renders on the same CPU when no GPU is there (software WebGL),
    and torch's OpenMP threads spin while they wait; on 2 cores, 2 torch threads once made
    a MECCA step 3x slower beside Chromium than 1 thread. Since the page keeps left clicks
    from NiiVue (no frame redrawn per click) and the generalist runs 4 passes a step, 2
    threads are the faster on 2 cores: click-to-overlay 279 against 310 ms for the
    generalist, 192 against 208 for MECCA (``benchmarks/browser_latency.py --threads``,
    2026-12-07, docs/server.md).
    """
    import torch

    cores = os.cpu_count() or 2
    n = min(cores, max(2, cores // 2)) if threads is None else int(threads)
    if n < 1:
        raise ConfigError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


def token_bits(token: str) -> float:
    """Estimated entropy of ``token`` in bits: its length times log2 of the size of the
    character classes it uses (lower case 26, upper case 26, digits 10, other 33)."""
    classes = (
        (str.islower, 26),
        (str.isupper, 26),
        (str.isdigit, 10),
        (lambda c: not c.isalnum(), 33),
    )
    alphabet = sum(size for test, size in classes if any(test(c) for c in token))
    return len(token) * math.log2(alphabet) if alphabet > 1 else 0.0


def check_token(token: str) -> None:
    """Refuse a guessable token (ConfigError): under 16 characters, an estimated entropy
    under 64 bits (:func:`token_bits`), fewer than 8 distinct characters, a repeated
    shorter string ("passwordpassword"), or anything but printable ASCII (it travels in an
    HTTP header). Why: the token is the only guard of a remote server, local or not."""
    hint = f"use a long random string, e.g. from: {TOKEN_HINT}"
    if not all(33 <= ord(c) <= 126 for c in token):
        raise ConfigError("the token must be printable ASCII without spaces", hint=hint)
    n = len(token)
    repeated = any(n % p == 0 and token == token[:p] * (n // p) for p in range(1, n // 2 + 1))
    if n < MIN_TOKEN_CHARS:
        problem = f"is {n} characters long, under {MIN_TOKEN_CHARS}"
    elif len(set(token)) < MIN_TOKEN_DISTINCT or repeated:
        problem = "has too few distinct characters or repeats itself"
    elif token_bits(token) < MIN_TOKEN_BITS:
        problem = f"has an estimated {token_bits(token):.0f} bits, under {MIN_TOKEN_BITS:.0f}"
    else:
        return
    raise ConfigError(f"the token {problem}", hint=hint)


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
        token: shared secret (16+ printable ASCII characters, an estimated 64+ bits:
            :func:`check_token`); when set every API request needs
            ``Authorization: Bearer <token>`` (the page takes it once from a link's
            ``#token=`` fragment or asks for it; it is never accepted in a URL).
        allow_remote: explicit consent to bind a non-loopback interface.
        roots: folders whose images may be opened by a path relative to them; a client
            never names a server path, only ``(root index, relative path)``.
        state_dir: where sessions autosave (image, clicks, ROI, mask) and exports go.
        max_upload_bytes: largest request body (uploads included).
        max_voxels: largest image, in voxels, read from its header before any data.
        max_decompressed_bytes: largest total size of an upload's files once unpacked.
        session_ttl_s: idle seconds before a session is unloaded from memory (its saved
            state stays on disk and is reloaded on the next request).
        max_sessions: saved sessions the state folder may hold; a new one beyond is
            refused with 503 until one is deleted.
        max_loaded_sessions: sessions held in memory at once; the least recently used idle
            one is unloaded (to disk) to make room.
        max_memory_bytes: bound on the memory that sessions hold (images, masks, undo
            states; estimated from their arrays) and that images being opened will take;
            least recently used sessions are unloaded first, else 503.
        step_timeout_s: longest a step (or a reload's replay) may run; a longer one is
            abandoned with 503 and its session goes back to its last saved state.
        step_workers: steps run at once (each on its own thread, no lock between sessions).
        methods: methods offered (registry names); the first is the default (by default
            the registry's served ones, :func:`mecca.methods.served`).
        weights: (method, model) pairs: the model (run folder, checkpoint or bundle) a
            method loads instead of its shipped default; ``partial`` needs one.
        extra_hosts: Host header values accepted besides the bound host and loopback names
            (``--allow-host``); binding every interface (0.0.0.0, ::) needs at least one.
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
    session_ttl_s: float = 1800.0
    max_sessions: int = 200
    max_loaded_sessions: int = 32
    max_memory_bytes: int = 4 << 30
    step_timeout_s: float = 60.0
    step_workers: int = 4
    methods: tuple[str, ...] = field(default_factory=served)
    weights: tuple[tuple[str, str], ...] = ()
    extra_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not is_loopback(self.host):
            if not self.allow_remote:
                raise ConfigError(
                    f"refusing to serve on {self.host}: only this machine (127.0.0.1) by default",
                    hint="pass --allow-remote and --token to serve on another interface",
                )
            if not self.token:
                raise ConfigError(
                    "serving on another interface needs a token",
                    hint=f"pass --token with a long random string, e.g. from: {TOKEN_HINT}",
                )
        if self.token is not None:
            check_token(self.token)
        if self.host in WILDCARD_HOSTS and not self.extra_hosts:
            raise ConfigError(
                f"serving on {self.host} (every interface) needs the names clients use: "
                "requests naming any other host are refused (DNS-rebinding guard)",
                hint="pass --allow-host with this machine's name or address (repeatable), "
                "e.g. --allow-host 192.168.1.20 --allow-host myhost.lan",
            )
        for name in (
            "max_upload_bytes",
            "max_voxels",
            "max_decompressed_bytes",
            "max_sessions",
            "max_loaded_sessions",
            "max_memory_bytes",
            "step_workers",
        ):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("session_ttl_s", "step_timeout_s"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.methods:
            raise ConfigError("at least one method must be offered")

    def allowed_hosts(self) -> list[str]:
        """Host header values the server answers (DNS-rebinding guard)."""
        hosts = {self.host, *LOOPBACK_NAMES, "[::1]", *self.extra_hosts}
        return sorted(hosts)
