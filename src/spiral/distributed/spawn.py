"""Start N worker processes on this machine, collect their results, never hang.

``spawn(fn, nproc, *args)`` starts ``nproc`` processes (as ``torch.multiprocessing.spawn``
does), each of which joins a gloo process group on an ephemeral port of 127.0.0.1 and runs
``fn(rank, world_size, *args)``. A worker returns a dict: arrays travel back in an ``.npz``
file (loaded with ``allow_pickle=False``: loading never executes code), everything else as
JSON. The parent watches the workers:

- a rank that raises or dies (killed, out of memory) ends the whole job at once with an
  error naming the rank, its exit code or signal, and its traceback's last line;
- a rank that hangs makes its peers' collectives time out after ``collective_timeout_s``
  (gloo raises), and the parent's own ``timeout_s`` is the last resort: every worker is
  terminated and a TimeoutError names the ranks that had not finished.

Under ``torchrun`` use :func:`spiral.distributed.runtime.init_from_env` instead.
Chapter: stage 13.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spiral.distributed.runtime import free_port, init_process_group, require_torch

__all__ = ["WorkerError", "spawn"]


class WorkerError(RuntimeError):
    """A worker process raised, died, or did not finish in time."""


def _save(out: Path, rank: int, result: dict[str, Any]) -> None:
    arrays = {k: v for k, v in result.items() if isinstance(v, np.ndarray)}
    rest = {k: v for k, v in result.items() if not isinstance(v, np.ndarray)}
    np.savez(out / f"rank{rank}.npz", **arrays)  # type: ignore[arg-type]
    (out / f"rank{rank}.json").write_text(json.dumps(rest))


def _load(out: Path, rank: int) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / f"rank{rank}.json").read_text())
    with np.load(out / f"rank{rank}.npz", allow_pickle=False) as z:
        result.update({k: z[k] for k in z.files})
    return result


def _worker(fn: Callable[..., dict[str, Any]], rank: int, world_size: int, port: int,
            out: str, collective_timeout_s: float, args: tuple[Any, ...]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch = require_torch()
    torch.set_num_threads(1)
    try:
        init_process_group(rank, world_size, port, collective_timeout_s)
        result = fn(rank, world_size, *args)
        _save(Path(out), rank, result or {})
        torch.distributed.destroy_process_group()
    except BaseException as e:  # report, then exit non-zero: the parent names the rank
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        (Path(out) / f"rank{rank}.err").write_text(last + "\n" + traceback.format_exc())
        os._exit(1)


def _describe(code: int | None) -> str:
    if code is not None and code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def spawn(fn: Callable[..., dict[str, Any]], nproc: int, *args: Any, timeout_s: float = 120.0,
          collective_timeout_s: float = 30.0, start_method: str = "fork"
          ) -> list[dict[str, Any]]:
    """Run ``fn(rank, nproc, *args)`` in ``nproc`` processes; return each rank's dict.

    ``fn`` must be a module-level function (picklable under the "spawn" start method).
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    require_torch()  # imported once here, inherited by forked workers
    ctx: Any = mp.get_context(start_method)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="spiral-dist-") as tmp:
        procs = [ctx.Process(target=_worker, daemon=True,
                             args=(fn, r, nproc, port, tmp, collective_timeout_s, args))
                 for r in range(nproc)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout_s
        try:
            while any(p.is_alive() for p in procs):
                failed = [r for r, p in enumerate(procs)
                          if not p.is_alive() and p.exitcode != 0]
                if failed:
                    break
                if time.monotonic() > deadline:
                    hung = [r for r, p in enumerate(procs) if p.is_alive()]
                    raise WorkerError(f"ranks {hung} did not finish within {timeout_s:.0f} s "
                                      "(a hung rank?); all workers were stopped")
                time.sleep(0.02)
            for p in procs:
                p.join(timeout=0.1)
            failed = [r for r, p in enumerate(procs) if p.exitcode not in (0, None)]
            if failed:
                r = min(failed, key=lambda k: (Path(tmp) / f"rank{k}.err").exists())
                err = Path(tmp) / f"rank{r}.err"
                why = err.read_text().splitlines()[0] if err.exists() else "no traceback"
                raise WorkerError(f"rank {r} {_describe(procs[r].exitcode)} ({why}); "
                                  f"the job of {nproc} processes was stopped")
            return [_load(Path(tmp), r) for r in range(nproc)]
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join(timeout=5)
