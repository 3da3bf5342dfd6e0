"""A TCP proxy tests can break on purpose, between a client and a real server.

- `refuse()`: open connections are closed and new ones are closed at once (a server that is
  down or unreachable; clients see resets and retry);
- `stall()`: open connections stay open but nothing flows any more, in either direction (a
  stream silently dropped by a NAT or load balancer); new connections work normally;
- `restore()`: back to forwarding.

It forwards bytes only, so TLS passes through untouched.
"""

from __future__ import annotations

import socket
import threading


class BreakableProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.mode = "forward"
        self.connections = 0  # accepted so far: how often clients (re)connected
        self._open: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self._stalled: list[tuple[socket.socket, socket.socket, threading.Event]] = []  # closed by close() only
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def refuse(self) -> None:
        self.mode = "refuse"
        self._close_open()

    def stall(self) -> None:
        with self._lock:
            for _, _, flowing in self._open:
                flowing.clear()
            # left hanging, never resumed: the client has to give up on them (closed at the end, so
            # a client still waiting on one does not hold up its own shutdown)
            self._stalled += self._open
            self._open = []

    def restore(self) -> None:
        self.mode = "forward"

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            self._open += self._stalled
            self._stalled = []
        self._close_open()

    def _close_open(self) -> None:
        with self._lock:
            for client, upstream, _ in self._open:
                for sock in (client, upstream):
                    _shutdown(sock)
                    sock.close()
            self._open = []

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.mode == "refuse":
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            flowing = threading.Event()
            flowing.set()
            with self._lock:
                self._open.append((client, upstream, flowing))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, flowing), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, flowing: threading.Event) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not flowing.is_set():
                    flowing.wait()  # stalled for good: hold the connection and deliver nothing
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the other side
        pass
