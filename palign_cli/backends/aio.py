"""One event loop owned by a synchronous backend: concurrent requests that stop at once.

Stages call backends synchronously. The openai backend runs the requests of one call as
tasks on a private asyncio loop, driven from the calling thread. No worker thread ever holds
a request, so nothing is left for the interpreter to join at exit:

- Ctrl-C cancels the running tasks (their sockets close) and surfaces as KeyboardInterrupt
  within a moment, however long a request had left; a second Ctrl-C stops waiting even for
  that (as `asyncio.run` does).
- the first failure of one task cancels its siblings before `gather` re-raises it, so nothing
  more is sent or logged after a fatal error.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

CANCEL_GRACE = 1.0  # seconds a cancelled request may take to close its connection


class LoopRunner:
    """A private event loop, run from synchronous code one coroutine at a time."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` to its end; Ctrl-C cancels it and raises KeyboardInterrupt."""
        task = self.loop.create_task(coro)
        interrupts = 0

        def on_sigint(signum: int, frame: Any) -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts > 1:
                raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for the cancellation
            task.cancel()
            self.loop.call_soon_threadsafe(lambda: None)  # wake the selector so the cancel runs now

        restore = _catch_sigint(on_sigint)
        try:
            result = self.loop.run_until_complete(task)
        except asyncio.CancelledError:
            if interrupts:
                raise KeyboardInterrupt from None
            raise
        except BaseException:
            self._settle(task)  # KeyboardInterrupt raised inside the loop (not our handler)
            raise
        finally:
            restore()
        if interrupts:
            raise KeyboardInterrupt  # Ctrl-C came as the task finished: still honour it
        return result

    def _settle(self, task: asyncio.Task[Any]) -> None:
        """Cancel `task` and give it a moment to close its connections; never block longer."""
        if task.done() or self.loop.is_closed():
            return
        task.cancel()
        with contextlib.suppress(BaseException):
            self.loop.run_until_complete(asyncio.wait([task], timeout=CANCEL_GRACE))

    def close(self) -> None:
        """Cancel whatever is left (after an interrupt) and close the loop without waiting."""
        if self.loop.is_closed():
            return
        for task in asyncio.all_tasks(self.loop):
            self._settle(task)
        self.loop.close()


def _catch_sigint(handler: Callable[[int, Any], None]) -> Callable[[], None]:
    """Install `handler` for SIGINT where Python's default one is active; returns the undo.

    Off the main thread, or where someone else handles SIGINT (or ignores it), nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return lambda: None
    signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, signal.default_int_handler)


async def bounded_map(
    fn: Callable[[T], Awaitable[R]], items: Sequence[T], limit: asyncio.Semaphore
) -> list[R]:
    """`fn` over `items` concurrently, at most `limit` at once, results in order.

    The first failure (or a cancellation of the caller) cancels every sibling and waits,
    briefly, for them to close before it propagates: nothing keeps sending after it.
    Coroutines are made only once a slot is free, so a cancelled job leaves none unawaited.
    """

    async def one(item: T) -> R:
        async with limit:
            return await fn(item)

    tasks = [asyncio.ensure_future(one(item)) for item in items]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_GRACE)
        raise
