"""A bounded load test of an OpenAI-style completions endpoint (loopback only).

``n_clients`` threads share a fixed list of requests; each client sends its next request as
soon as the previous answer arrives (a closed loop), so at most ``n_clients`` requests are
in flight. Reported: requests completed and failed, completion tokens per second of wall
time (the ``usage`` field), and latency percentiles p50 and p99. Uses only the standard
library (urllib), so any server speaking the protocol can be measured.
Chapter: stage 17 (inference).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np

__all__ = ["complete", "load_test"]


def complete(base_url: str, body: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """POST ``body`` to ``{base_url}/v1/completions``; the decoded JSON answer (or error)."""
    req = urllib.request.Request(f"{base_url}/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as err:
        return dict(json.loads(err.read()))


def load_test(base_url: str, model: str, prompts: list[str], *, n_clients: int = 4,
              max_tokens: int = 16, temperature: float = 1.0) -> dict[str, Any]:
    """Send one request per prompt from ``n_clients`` concurrent clients; summarize."""
    if not base_url.startswith(("http://127.0.0.1", "http://localhost")):
        raise ValueError(f"the load test runs against loopback only, got {base_url}")
    if n_clients < 1 or not prompts:
        raise ValueError("need n_clients >= 1 and at least one prompt")
    todo: queue.Queue[tuple[int, str]] = queue.Queue()
    for i, p in enumerate(prompts):
        todo.put((i, p))
    latencies: list[float] = []
    tokens, errors = [0], [0]
    lock = threading.Lock()

    def client() -> None:
        while True:
            try:
                i, prompt = todo.get_nowait()
            except queue.Empty:
                return
            t0 = time.perf_counter()
            try:
                out = complete(base_url, {"model": model, "prompt": prompt, "seed": i,
                                          "max_tokens": max_tokens, "temperature": temperature})
                ok = "choices" in out
            except (OSError, ValueError):
                out, ok = {}, False
            dt = time.perf_counter() - t0
            with lock:
                if ok:
                    latencies.append(dt)
                    tokens[0] += int(out["usage"]["completion_tokens"])
                else:
                    errors[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"requests": len(prompts), "completed": len(latencies), "errors": errors[0],
            "completion_tokens": tokens[0], "wall_s": wall, "tokens_per_s": tokens[0] / wall,
            "requests_per_s": len(latencies) / wall, "p50_s": float(np.percentile(lat, 50)),
            "p99_s": float(np.percentile(lat, 99)), "n_clients": n_clients}
