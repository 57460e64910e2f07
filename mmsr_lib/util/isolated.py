"""Call a function in a fresh (spawned) process and get its result back, or a clear error.

Probes and benchmarks measure a configuration in a process of its own, so that its peak memory
is its own and a CUDA context starts empty. `multiprocessing.Pool.apply` waits forever when its
worker dies mid-task (the out-of-memory killer, a signal sent to the process group by `timeout`
or a scheduler): the lost task is never answered and `Pool.join` never returns. Here the parent
waits on a pipe whose only writer is the child, so a dead child ends the wait at once (EOF) and
is reported with its exit code; an interrupt of the parent stops the child before it returns.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

T = TypeVar("T")


class ChildProcessDied(RuntimeError):
    """The fresh process ended without returning a result (killed, or it exited)."""


def _child(conn: Connection, fn: Callable[..., Any], args: tuple) -> None:
    try:
        try:
            out = (True, fn(*args))
        except BaseException as e:  # noqa: BLE001 - sent to the parent, which re-raises it
            out = (False, (e, traceback.format_exc()))
        try:
            conn.send(out)
        except Exception as e:  # an unpicklable result or exception: send its text instead
            conn.send((False, (RuntimeError(f"{type(e).__name__}: {e}"), traceback.format_exc())))
    finally:
        conn.close()


def call_in_fresh_process(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a spawned process. Its exception is re-raised here (with the child's
    traceback as a note); a child that dies first raises `ChildProcessDied` naming its exit code
    (-9: killed, often by the out-of-memory killer); Ctrl-C or a signal here stops the child."""
    ctx = mp.get_context("spawn")  # fork after torch's threads start can hang
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(sender, fn, args), daemon=True)
    proc.start()
    sender.close()  # the child holds the only writer now: its death means EOF here
    try:
        try:
            ok, value = receiver.recv()
        except EOFError:
            proc.join()
            code = proc.exitcode
            hint = ""
            if code is not None and code < 0:
                oom = ", e.g. by the out-of-memory killer" if code == -9 else ""
                hint = f" (killed by signal {-code}{oom})"
            raise ChildProcessDied(
                f"{getattr(fn, '__name__', fn)} ended without a result in its fresh process: "
                f"exit code {code}{hint}. Try less memory (a smaller batch or catalog), or run it in "
                "this process (`mmsr plan --in-process`, `isolate=False`) to see the error.") from None
        proc.join()
    finally:
        receiver.close()
        if proc.is_alive():  # the parent was interrupted: do not leave the child running
            proc.terminate()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    if ok:
        return value
    exc, tb = value
    if isinstance(exc, BaseException):
        exc.add_note(f"in the fresh process:\n{tb}")
        raise exc
    raise RuntimeError(tb)
