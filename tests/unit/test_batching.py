"""The generator's batches: formed when the model is free, from every request that waited for it."""

from __future__ import annotations

import asyncio

import pytest

from deployments.batching import Batches


class Model:
    """A model call that records each batch and, while `hold` is set, waits until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.running = asyncio.Event()
        self.release = asyncio.Event()
        self.hold = True

    async def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(items)
        self.running.set()
        if self.hold:
            await self.release.wait()
        if "bad" in items:
            raise ValueError("this batch fails")
        return [item.upper() for item in items]


async def _busy_model(batches: Batches, model: Model, first: str = "first") -> asyncio.Task:
    """Start one call and return once the model is running it (and held there)."""
    call = asyncio.create_task(batches(first))
    await model.running.wait()
    return call


def test_requests_that_arrive_while_a_batch_runs_form_the_next_batch_together():
    async def scenario():
        model = Model()
        batches = Batches(model, max_batch_size=8, wait_s=0.0)
        first = await _busy_model(batches, model)
        rest = [asyncio.create_task(batches(f"cut-{i}")) for i in range(5)]
        await asyncio.sleep(0.05)  # `@serve.batch` had formed five batches of one by now
        model.hold = False
        model.release.set()
        return await first, await asyncio.gather(*rest), model.batches

    first, rest, batches = asyncio.run(scenario())
    assert batches == [["first"], [f"cut-{i}" for i in range(5)]]
    assert first == "FIRST" and rest == [f"CUT-{i}" for i in range(5)]


def test_a_batch_holds_at_most_max_batch_size_requests_in_arrival_order():
    async def scenario():
        model = Model()
        batches = Batches(model, max_batch_size=4, wait_s=0.0)
        first = await _busy_model(batches, model)
        rest = [asyncio.create_task(batches(str(i))) for i in range(10)]
        await asyncio.sleep(0.01)
        model.hold = False
        model.release.set()
        await asyncio.gather(first, *rest)
        return model.batches

    assert asyncio.run(scenario()) == [["first"], ["0", "1", "2", "3"], ["4", "5", "6", "7"], ["8", "9"]]


def test_an_idle_model_waits_wait_s_for_requests_sent_together():
    async def scenario():
        model = Model()
        model.hold = False
        batches = Batches(model, max_batch_size=8, wait_s=0.2)
        first = asyncio.create_task(batches("a"))
        await asyncio.sleep(0.02)
        second = asyncio.create_task(batches("b"))
        return await asyncio.gather(first, second), model.batches

    results, batches = asyncio.run(scenario())
    assert results == ["A", "B"] and batches == [["a", "b"]]


def test_requests_that_waited_for_a_busy_model_do_not_wait_again():
    async def scenario():
        model = Model()
        batches = Batches(model, max_batch_size=8, wait_s=5.0)  # a pause this long would miss the 1 s bound
        busy = asyncio.create_task(batches("busy"))  # an idle model: this one does wait wait_s, held after
        await asyncio.wait_for(model.running.wait(), 10)
        queued = asyncio.create_task(batches("queued"))
        await asyncio.sleep(0.01)
        model.hold = False
        model.release.set()
        released = asyncio.get_running_loop().time()
        await asyncio.wait_for(asyncio.gather(busy, queued), 1.0)
        return model.batches, asyncio.get_running_loop().time() - released

    batches, after_release = asyncio.run(scenario())
    assert batches == [["busy"], ["queued"]] and after_release < 1.0


def test_a_failing_batch_fails_its_own_callers_and_the_next_batch_still_runs():
    async def scenario():
        model = Model()
        batches = Batches(model, max_batch_size=2, wait_s=0.0)
        first = await _busy_model(batches, model, first="bad")
        later = asyncio.create_task(batches("good"))
        await asyncio.sleep(0.01)
        model.hold = False
        model.release.set()
        outcome = await asyncio.gather(first, return_exceptions=True)
        return outcome[0], await later, model.batches

    failure, later, batches = asyncio.run(scenario())
    assert isinstance(failure, ValueError) and str(failure) == "this batch fails"
    assert later == "GOOD" and batches == [["bad"], ["good"]]


def test_a_caller_that_gave_up_before_its_batch_formed_is_left_out_of_it():
    async def scenario():
        model = Model()
        batches = Batches(model, max_batch_size=8, wait_s=0.0)
        first = await _busy_model(batches, model)
        kept = asyncio.create_task(batches("kept"))
        dropped = asyncio.create_task(batches("dropped"))
        await asyncio.sleep(0.01)
        dropped.cancel()  # as `bounded` cancels a call that outlived the stage timeout
        model.hold = False
        model.release.set()
        await first
        with pytest.raises(asyncio.CancelledError):
            await dropped
        return await kept, model.batches

    kept, batches = asyncio.run(scenario())
    assert kept == "KEPT" and batches == [["first"], ["kept"]]


def test_a_batch_size_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        Batches(Model(), max_batch_size=0, wait_s=0.0)
