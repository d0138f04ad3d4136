"""The serving loop: requests go first, background work takes a few steps per turn.

What a user relies on: an ack whose commit is back is answered at the loop's next turn,
however much work the alerts behind it have made ready; that work still gets done, in
order, with its errors reported and its cancellations honoured.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from bot.runtime.loop import STEPS, YIELDS, AckFirstLoop, background


def busy_for(seconds: float) -> None:
    """A job's step that takes the interpreter for ``seconds``: rendering, parsing."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def run(coro: Any) -> Any:
    with asyncio.Runner(loop_factory=AckFirstLoop) as runner:
        return runner.run(coro)


def test_a_request_waits_for_a_few_background_steps_not_all_of_them() -> None:
    """Fifty busy background tasks are ready at once; a foreground task that becomes
    ready with them runs after at most ``STEPS`` of their steps, each 2 ms of work."""

    async def main() -> tuple[float, list[int]]:
        steps: list[int] = []
        go = asyncio.Event()

        async def busy(n: int) -> None:
            await go.wait()
            for _ in range(3):
                busy_for(0.002)
                steps.append(n)
                await asyncio.sleep(0)

        async def start_all() -> None:
            await asyncio.gather(*(busy(n) for n in range(50)))

        work = background(start_all())
        await asyncio.sleep(0.01)  # every busy task waits for ``go``
        go.set()  # all fifty become ready in the same turn as the request below
        started = time.perf_counter()
        await asyncio.sleep(0)  # the request's next step
        waited = time.perf_counter() - started
        await work
        return waited, steps

    waited, steps = run(main())
    assert len(steps) == 150  # all the background work was done
    assert waited < 0.002 * (STEPS + 2), f"the request waited {waited * 1000:.1f} ms"


@pytest.mark.parametrize(
    ("yields", "serving", "waited"), [(YIELDS, 1, 3), (0, 1, 6), (YIELDS, 0, 6)]
)
def test_a_request_of_several_steps_waits_for_a_background_step_every_other_step(
    yields: int, serving: int, waited: int
) -> None:
    """An ack takes several turns (body read, commit sent, commit back, answer written).
    While background work is always ready, the request's six steps wait for three
    background steps in all when the background gives way once (``YIELDS``) to a request
    being served, and for six when it does not give way, or no request is being served
    (a backlog draining: what is ready beside it is its own)."""

    async def main() -> tuple[int, int]:
        steps: list[int] = []

        async def busy() -> None:
            for n in range(200):
                steps.append(n)
                await asyncio.sleep(0)

        loop = asyncio.get_running_loop()
        assert isinstance(loop, AckFirstLoop)
        loop.requests = {"a request"} if serving else set()
        work = background(busy())
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the background task is running
        before = len(steps)
        for _ in range(6):
            await asyncio.sleep(0)
        during = len(steps) - before
        await work
        return during, len(steps)

    with asyncio.Runner(loop_factory=lambda: AckFirstLoop(yields=yields)) as runner:
        during, done = runner.run(main())
    assert done == 200  # the background work still got done
    assert during == waited


def test_without_the_loop_the_same_request_waits_for_every_step() -> None:
    """The test above, on asyncio's own loop: it measures what the loop is for."""

    async def main() -> float:
        go = asyncio.Event()

        async def busy() -> None:
            await go.wait()
            busy_for(0.002)

        tasks = [asyncio.create_task(busy()) for _ in range(20)]
        await asyncio.sleep(0.01)
        go.set()
        started = time.perf_counter()
        await asyncio.sleep(0)
        waited = time.perf_counter() - started
        await asyncio.gather(*tasks)
        return waited

    assert asyncio.run(main()) >= 0.002 * 20 * 0.9


def test_background_steps_keep_their_order_and_their_errors_are_reported() -> None:
    async def main() -> tuple[list[int], list[dict[str, Any]]]:
        errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        order: list[int] = []

        async def work() -> None:
            loop = asyncio.get_running_loop()
            for n in range(10):
                loop.call_soon(order.append, n)
            loop.call_soon(lambda: 1 / 0)
            cancelled = loop.call_soon(order.append, 99)
            cancelled.cancel()
            await asyncio.sleep(0.01)

        await background(work())
        return order, errors

    order, errors = run(main())
    assert order == list(range(10))
    assert len(errors) == 1 and isinstance(errors[0]["exception"], ZeroDivisionError)


def test_a_background_task_is_cancelled_and_awaited_as_any_other() -> None:
    async def main() -> bool:
        task = background(asyncio.sleep(3600))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert run(main())


def test_a_closed_loop_refuses_callbacks_and_debug_mode_keeps_its_checks() -> None:
    """The fast path skips asyncio's checks only where they cannot fail."""
    loop = AckFirstLoop()
    loop.set_debug(True)
    refused: list[BaseException] = []

    def from_another_thread() -> None:
        try:
            loop.call_soon(print)
        except RuntimeError as exc:
            refused.append(exc)

    thread = threading.Thread(target=from_another_thread)
    loop.call_soon(thread.start)
    loop.run_until_complete(asyncio.sleep(0.05))
    thread.join()
    assert refused and "Non-thread-safe" in str(refused[0])  # asyncio's debug check
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_soon(print)
