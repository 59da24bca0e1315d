"""A loopback TCP proxy whose behaviour a test (or ``bench faults``) switches at will.

- ``pass``: relays bytes both ways (the normal case);
- ``refuse``: new connections are reset at once, open ones are closed;
- ``blackhole``: new connections are accepted and then never answered, and open ones
  stop relaying without closing: the peer's kernel acknowledges everything, so no
  keepalive, ``tcp_user_timeout`` or cancel request ends the wait (a stuck pooler
  or proxy in front of a database). Leaving blackhole closes what it held.

Threads only, loopback only, no dependency: usable from pytest and from bench.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from collections.abc import Iterator

MODES = ("pass", "refuse", "blackhole")


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, port: int = 0) -> None:
        self.upstream = (upstream_host, int(upstream_port))
        self.mode = "pass"
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()

    # --- control -------------------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        previous, self.mode = self.mode, mode
        if mode == "refuse" or (previous == "blackhole" and mode != "blackhole"):
            self._close_open()

    @contextlib.contextmanager
    def mode_for(self, mode: str) -> Iterator[None]:
        self.set_mode(mode)
        try:
            yield
        finally:
            self.set_mode("pass")

    def close(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._close_open()

    # --- internals ---------------------------------------------------------------

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open.update(socks)

    def _close_open(self) -> None:
        with self._lock:
            socks, self._open = self._open, set()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                # RST instead of FIN: the client sees the refusal at once.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            if self.mode == "blackhole":
                self._track(client)  # held open, never read, never answered
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            self._track(client, server)
            threading.Thread(
                target=self._relay, args=(client, server), name="tcp-proxy-relay", daemon=True
            ).start()

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        peer = {client: server, server: client}
        with selectors.DefaultSelector() as selector:
            try:
                selector.register(client, selectors.EVENT_READ)
                selector.register(server, selectors.EVENT_READ)
            except (ValueError, OSError):
                return
            while not self._stopped.is_set():
                if client.fileno() < 0 or server.fileno() < 0:
                    return
                if self.mode == "blackhole":
                    # Read nothing, answer nothing: bytes wait in the kernel buffers.
                    self._stopped.wait(0.05)
                    continue
                try:
                    ready = selector.select(timeout=0.1)
                    for key, _ in ready:
                        sock = key.fileobj
                        data = sock.recv(65536)  # type: ignore[union-attr]
                        if not data:
                            raise ConnectionError("closed")
                        peer[sock].sendall(data)  # type: ignore[index]
                except (OSError, ValueError, ConnectionError):
                    break
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.close()
        with self._lock:
            self._open.discard(client)
            self._open.discard(server)
