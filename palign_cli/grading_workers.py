"""Warm grading workers: one fork server imports math-verify and sympy once, then forks workers.

Why: a fresh interpreter per worker pays math-verify's and sympy's import (seconds on a small
machine) for every worker, and again for every worker the hard timeout kills. Here one
process (a fresh interpreter, never a fork of palign, which may hold threads or a GPU engine)
imports them, grades one pair of each kind to warm sympy's caches, and then forks a worker per
request: a worker starts in milliseconds, shares the warm pages, and replacing a killed one
costs a fork, not an import.

Plumbing: the parent makes each worker's two pipes and hands the child's ends to the server
over a Unix socket (SCM_RIGHTS); the server forks, the child serves tasks on those pipes
(`serve`), and the server answers with the child's pid. Only the server may kill or reap its
children, so the parent asks it to (`kill`), and the server kills only a pid it has not reaped
yet: a recycled pid is never hit. Deaths chain: palign's death kills the server
(PR_SET_PDEATHSIG), the server's death (or palign closing the socket) kills the workers.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
import struct
import subprocess
import sys
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from palign_cli.errors import BackendUnavailable, PalignError

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
_PID = struct.Struct("!i")
# Every request is one fixed-size message: (b"F", soft timeout, 0) or (b"K", 0.0, pid).
_REQUEST = struct.Struct("!cdi")


def die_with_parent(parent: int | None = None) -> None:
    """Linux: have the kernel kill this process when its parent dies, even mid-computation
    (a pathological sample would otherwise keep a core busy for minutes after a crash).
    The kernel ties this to the thread that started the process, and a fork clears it, so
    each worker sets it again (its parent is the server)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if parent is not None and os.getppid() != parent:  # it died before we asked: go too
        os._exit(0)


# --- the worker (a forked child of the server) ---------------------------------------------------


class SoftTimeout(BaseException):
    """Raised by the worker's alarm. A BaseException, so math-verify's `except Exception`
    handlers (which turn errors into a silent False) let it through to us."""


_ARMED = False


def _on_alarm(signum: int, frame: Any) -> None:
    if _ARMED:
        raise SoftTimeout()


def serve(rx_fd: int, tx_fd: int, soft_timeout: float, parent: int | None = None) -> None:
    """Worker loop: grade (index, gold, text, question, strict) tasks until EOF or None."""
    global _ARMED
    from palign_cli.grading import Grade, grade_pair, pred_config

    die_with_parent(parent)
    signal.signal(signal.SIGALRM, _on_alarm)
    rx, tx = Connection(rx_fd, writable=False), Connection(tx_fd, readable=False)
    cache: dict[str, Any] = {}
    config = pred_config()
    tx.send("ready")
    while True:
        try:
            task = rx.recv()
        except (EOFError, OSError):
            task = None
        if task is None:
            os._exit(0)  # nothing to flush; skips a slow teardown of sympy's modules
        index, gold, text, question, strict = task
        try:
            try:
                _ARMED = True
                signal.setitimer(signal.ITIMER_REAL, soft_timeout)
                grade = grade_pair(gold, text, cache, config, question=question, strict=strict)
            finally:
                _ARMED = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        except SoftTimeout:
            grade = Grade(0, None, "timeout")
        except Exception:  # noqa: BLE001 - a bug in a dependency must not end the run
            grade = Grade(0, None, "error")
        tx.send((index, grade.label, grade.pred, grade.status, grade.flipped_by))


# --- the server ------------------------------------------------------------------------------------


def _warm_up() -> None:
    """Import and exercise what grading uses, so every fork starts warm."""
    from palign_cli.grading import grade_pair, quiet_math_verify

    quiet_math_verify()
    for gold, text in (("1", r"\boxed{1}"), (r"\frac{1}{2}", r"so \boxed{0.5}"), ("(1,2)", r"\boxed{(2, 1)}"),
                       (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\boxed{(1,2)}"), ("2i", r"\boxed{(1+i)^2}")):
        grade_pair(gold, text)


def run_server(sock_fd: int) -> None:
    """Fork-server entry point: warm up, greet, then fork and kill workers on request."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    sock = socket.socket(fileno=sock_fd)
    _warm_up()
    # Move everything imported so far out of the collector's reach: a worker's collections then
    # never write to those objects' headers, so the pages stay shared instead of being copied.
    gc.freeze()
    sock.sendall(b"R")
    live: set[int] = set()
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, _REQUEST.size, 2)
            while msg and len(msg) < _REQUEST.size:
                more = sock.recv(_REQUEST.size - len(msg))
                msg = msg + more if more else b""
        except OSError:
            msg, fds = b"", []
        if not msg:  # palign closed the socket (or died): end every worker, then ourselves
            for pid in live:
                _kill_and_reap(pid)
            os._exit(0)
        op, soft_timeout, pid = _REQUEST.unpack(msg)
        if op == b"F":
            server = os.getpid()
            pid = os.fork()
            if pid == 0:
                sock.close()
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                serve(fds[0], fds[1], soft_timeout, server)
                os._exit(0)
            for fd in fds:
                os.close(fd)
            live.add(pid)
            sock.sendall(_PID.pack(pid))
        elif op == b"K":
            if pid in live:  # not reaped yet, so the pid is still this worker's
                _kill_and_reap(pid)
                live.discard(pid)
            sock.sendall(_PID.pack(pid))
        _reap(live)


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _reap(live: set[int]) -> None:
    """Collect workers that exited on their own (asked to stop, or crashed)."""
    for pid in list(live):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            live.discard(pid)


# --- the parent's side -----------------------------------------------------------------------------


class ForkServer:
    """The parent's handle on the fork server: start it, fork workers, kill them, close it."""

    def __init__(self, startup_limit: float):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        code = f"from palign_cli.grading_workers import run_server; run_server({theirs.fileno()})"
        try:
            # Its stdout goes nowhere: the parent's stdout may carry JSONL. stderr shows an import error.
            self.process = subprocess.Popen([sys.executable, "-c", code], pass_fds=(theirs.fileno(),),
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)
        finally:
            theirs.close()
        self.sock = ours
        self.startup_limit = startup_limit
        self.ready = False
        self.unanswered = 0  # fork requests whose pid has not been read yet
        self.pids: list[int] = []  # in request order, read as needed

    def _await_ready(self) -> None:
        if self.ready:
            return
        if not select.select([self.sock], [], [], self.startup_limit)[0]:
            raise PalignError(f"the grading server did not start within {self.startup_limit:.0f} s")
        if self._recv(1) != b"R":
            raise BackendUnavailable(
                f"the grading server exited at start (see its error above); grading needs math-verify: pip install 'math-verify>=0.7' into {sys.executable}"
            )
        self.ready = True

    def _recv(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return data
            data += chunk
        return data

    def fork(self, child_rx: int, child_tx: int, soft_timeout: float) -> int:
        """Ask for a worker on these pipe ends (closed here once sent); its request number.

        Does not wait: the worker greets on its own pipe once it is up, and a server that
        never came up closes those pipes, which the waiting side sees."""
        try:
            socket.send_fds(self.sock, [_REQUEST.pack(b"F", soft_timeout, 0)], [child_rx, child_tx])
        except OSError:
            pass  # the server is gone: the worker's pipe reads EOF and says so
        finally:
            os.close(child_rx)
            os.close(child_tx)
        self.unanswered += 1
        return len(self.pids) + self.unanswered - 1

    def pid(self, request: int) -> int | None:
        """The pid of the worker from fork request `request` (None if the server is gone)."""
        try:
            self._await_ready()
            while len(self.pids) <= request and self.unanswered:
                raw = self._recv(_PID.size)
                if len(raw) < _PID.size:
                    return None
                self.pids.append(_PID.unpack(raw)[0])
                self.unanswered -= 1
        except (OSError, PalignError):
            return None
        return self.pids[request] if request < len(self.pids) else None

    def kill(self, request: int) -> None:
        """Kill (and have the server reap) the worker of fork request `request`."""
        pid = self.pid(request)
        # Read every fork answer still on the way first, so the next 4 bytes answer this kill.
        if pid is None or self.pid(len(self.pids) + self.unanswered - 1) is None:
            return
        try:
            self.sock.sendall(_REQUEST.pack(b"K", 0.0, pid))
            self._recv(_PID.size)
        except OSError:
            pass

    def close(self, wait: float = 5.0) -> None:
        """Close the socket: the server ends every worker left and exits."""
        self.sock.close()
        try:
            self.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Worker:
    """One forked worker and its two pipes, as the parent sees it."""

    def __init__(self, server: ForkServer, soft_timeout: float):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.server = server
        self.request = server.fork(to_child_r, from_child_w, soft_timeout)
        self.tx = Connection(to_child_w, readable=False)
        self.rx = Connection(from_child_r, writable=False)
        self.ready = False
        self.inflight: deque[int] = deque()  # task indices sent, in the order it grades them
        self.deadline = 0.0  # for the first of them, which it is grading now

    @property
    def pid(self) -> int | None:
        return self.server.pid(self.request)

    def await_ready(self, timeout: float) -> None:
        """Wait for the worker's greeting."""
        if self.ready:
            return
        if not self.rx.poll(timeout):
            raise PalignError(f"a grading worker did not start within {timeout:.0f} s")
        try:
            greeting = self.rx.recv()
        except (EOFError, OSError):
            raise BackendUnavailable(
                f"a grading worker exited at start (see its error above); grading needs math-verify: pip install 'math-verify>=0.7' into {sys.executable}"
            ) from None
        if greeting != "ready":
            raise PalignError(f"a grading worker said {greeting!r} instead of 'ready'")
        self.ready = True

    def send(self, index: int, task: tuple[Any, ...], now: float, limit: float) -> None:
        """Queue a task; the first in flight gets `limit` seconds from now."""
        self.tx.send((index, *task))
        if not self.inflight:
            self.deadline = now + limit
        self.inflight.append(index)

    def done(self, index: int, now: float, limit: float) -> None:
        """Task `index` came back: the next in flight starts now."""
        if self.inflight and self.inflight[0] == index:
            self.inflight.popleft()
        self.deadline = now + limit

    def kill(self) -> None:
        self.server.kill(self.request)
        self.tx.close()
        self.rx.close()

    def ask_to_stop(self) -> None:
        try:
            self.tx.send(None)
        except (OSError, ValueError):
            pass

    def stopped(self, timeout: float) -> bool:
        """True once the worker's end of its pipe closed (it exited), within `timeout` s."""
        try:
            while self.rx.poll(timeout):
                self.rx.recv()  # a late answer; keep reading until EOF
        except (EOFError, OSError):
            return True
        return False
