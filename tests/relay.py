"""A TCP relay that a test can cut, refuse, pause or trip, to give a client real network faults."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class Relay:
    """Forwards 127.0.0.1:<port> to a target.

    ``cut()`` closes every open connection; ``down()`` also refuses new ones until
    ``up()``; ``pause()`` holds every byte (a partition: nothing is refused, nothing
    arrives) until ``resume()``; ``trip_on(pattern)`` cuts everything right after
    forwarding the first client chunk that contains ``pattern``; ``slow(seconds)`` holds each
    client chunk that long before forwarding it (a slow link: every request answered, late).
    """

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url_host = f"127.0.0.1:{self.port}"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._refusing = False
        self._closed = False
        self._flowing = threading.Event()
        self._flowing.set()
        self._trip: bytes | None = None
        self._delay = 0.0
        self.tripped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing or self._closed:
                client.close()
                if self._closed:
                    return
                continue
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                self._flowing.wait()
                if from_client and self._delay:
                    time.sleep(self._delay)
                sink.sendall(data)
                trip = self._trip
                if from_client and trip is not None and trip in data:
                    self._trip = None
                    self.cut()
                    self.tripped.set()
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def cut(self) -> None:
        """Drop every open connection (new ones are still accepted)."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def down(self) -> None:
        """Drop every connection and refuse new ones, as a stopped server would."""
        self._refusing = True
        self.cut()

    def up(self) -> None:
        self._refusing = False

    def pause(self) -> None:
        """Hold every byte in both directions: connections hang, as behind a partition."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def slow(self, seconds: float) -> None:
        """Hold each client chunk ``seconds`` before forwarding it (0: at once again)."""
        self._delay = seconds

    def trip_on(self, pattern: bytes) -> None:
        """Cut every connection right after forwarding the first client chunk containing ``pattern``."""
        self.tripped.clear()
        self._trip = pattern

    def close(self) -> None:
        self._closed = True
        self.resume()
        self.cut()
        self._listener.close()
