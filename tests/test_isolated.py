"""`call_in_fresh_process`: results and errors come back, and a child that dies or a parent that
is interrupted never leaves the caller waiting (as `multiprocessing.Pool.apply` did in `mmsr plan`
and `mmsr bench`: a probe killed by `timeout`'s signal hung the command for good)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmsr_lib.util.isolated import ChildProcessDied, call_in_fresh_process


def _pid_and_sum(a: int, b: int) -> tuple[int, int]:
    return os.getpid(), a + b


def _fails(message: str) -> None:
    raise ValueError(message)


def _killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _exits() -> None:
    os._exit(3)


def _sleeps_after_writing_pid(path: str) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(600)


class _Interrupted(Exception):
    pass


@contextlib.contextmanager
def _hang_guard(seconds: int = 120) -> Iterator[None]:
    """Turn a hang (the bug this module fixes) into a failure instead of a stuck test run."""
    def fail(*_: object) -> None:
        raise AssertionError(f"still waiting after {seconds} s: the call hung")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_result_comes_back_from_another_process() -> None:
    pid, total = call_in_fresh_process(_pid_and_sum, 2, 3)
    assert total == 5 and pid != os.getpid()


def test_the_childs_exception_is_raised_with_its_traceback() -> None:
    with pytest.raises(ValueError, match="bad probe") as info:
        call_in_fresh_process(_fails, "bad probe")
    assert any("in the fresh process" in n and "_fails" in n for n in info.value.__notes__)


@pytest.mark.parametrize(("fn", "says"), [(_killed, "exit code -9 (killed by signal 9"),
                                          (_exits, "exit code 3")])
def test_a_child_that_dies_is_reported_not_waited_for(fn, says: str) -> None:
    with _hang_guard(), pytest.raises(ChildProcessDied) as info:
        call_in_fresh_process(fn)
    assert says in str(info.value) and fn.__name__ in str(info.value)


def test_an_interrupted_parent_stops_its_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    def interrupt(*_: object) -> None:
        if not pid_file.exists():  # the child has not started yet: look again in a second
            signal.alarm(1)
            return
        raise _Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.alarm(1)
        with pytest.raises(_Interrupted):
            call_in_fresh_process(_sleeps_after_writing_pid, str(pid_file))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # terminated and reaped, not left sleeping
        os.kill(pid, 0)
