"""The engine behind the server: one thread runs the scheduler; requests come and go by queue.

HTTP handlers run on an event loop and must never block it for a forward pass, while the
engine must see every live request at once to batch them. So the engine gets its own
thread: handlers put ``(request, listener)`` pairs on a thread-safe queue and the thread
loops — take new requests, run one :meth:`~spiral.inference.scheduler.Engine.step`, hand
every emitted token to its request's listener. A listener may ask the engine to stop its
request (a stop string matched, the client went away) by returning ``True``; the engine
aborts it at once and frees its blocks. Chapter: stage 17 (inference).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from spiral.inference.scheduler import Engine, Request

__all__ = ["EngineService", "Listener"]

# listener(token or None, finish_reason or None, error message or None) -> stop this request?
Listener = Callable[[int | None, str | None, str | None], bool]


class EngineService:
    """Runs ``engine`` in a daemon thread until :meth:`close`."""

    def __init__(self, engine: Engine, idle_wait: float = 0.05) -> None:
        self.engine, self.idle_wait = engine, idle_wait
        self.incoming: queue.Queue[tuple[Request, Listener]] = queue.Queue()
        self.listeners: dict[int, tuple[Request, Listener]] = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="spiral-engine", daemon=True)
        self.thread.start()

    def submit(self, request: Request, listener: Listener) -> None:
        """Queue a request; ``listener`` hears each token, then the finish reason."""
        if self._stop.is_set():
            raise RuntimeError("the engine has been shut down")
        self.incoming.put((request, listener))

    def _take_new(self, block: bool) -> None:
        try:
            item = self.incoming.get(timeout=self.idle_wait) if block else \
                self.incoming.get_nowait()
        except queue.Empty:
            return
        while True:
            request, listener = item
            try:
                self.engine.add(request)
                self.listeners[request.id] = (request, listener)
            except ValueError as err:
                listener(None, None, str(err))
            try:
                item = self.incoming.get_nowait()
            except queue.Empty:
                return

    def _notify(self, request: Request, token: int | None, error: str | None = None) -> None:
        entry = self.listeners.get(request.id)
        if entry is None:
            return
        stop = entry[1](token, request.finish_reason, error)
        if stop and not request.done:
            self.engine.abort(request, "stop")
            entry[1](None, request.finish_reason, None)
        if request.done or error:
            self.listeners.pop(request.id, None)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._take_new(block=not self.engine.has_work)
            if not self.engine.has_work:
                continue
            try:
                info = self.engine.step()
            except Exception as err:  # noqa: BLE001 — fail the live requests, keep serving
                for request, _ in list(self.listeners.values()):
                    self.engine.abort(request, "error")
                    self._notify(request, None, f"the engine failed: {err}")
                continue
            for request, token in info.emitted:
                self._notify(request, token)

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        e = self.engine
        return {"waiting": len(e.waiting), "running": len(e.running),
                "finished": len(e.finished), "free_blocks": e.pool.num_free,
                "max_blocks_used": e.max_blocks_used}
