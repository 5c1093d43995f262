"""Dynamic micro-batching: concurrent requests share one forward pass.

A backbone's forward pass on CPU costs far less per input on a batch of 16 than on 16 single
inputs (one call's fixed overhead, wider matrix products). :class:`MicroBatcher` queues each
request's inputs; one background task takes the first waiting request, then keeps adding
requests until ``max_batch`` inputs are gathered or ``max_wait_s`` has passed since it took the
first, and runs the model once on all of them in a single worker thread (one forward at a time:
two concurrent passes would only fight over the same cores). ``max_batch=1`` turns batching
off: each request then runs alone, which is the baseline ``benchmarks/bench_serve.py`` compares
against.

Each batch is padded (its last input repeated, the extra rows dropped) to the next power of
two, so the model sees at most log2(max_batch)+1 batch shapes: PyTorch's CPU kernels keep
state per input shape, and with every size from 1 to 32 a server's memory climbed by 200 MiB
in a minute of load before levelling off (``benchmarks/RESULTS.md``, issue 13: serving).

A batch that fails is retried request by request, so one bad input cannot fail the other
requests it happened to share a batch with.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

#: Runs the model on a list of inputs and returns one row of probabilities per input.
PredictFn = Callable[[list[Any]], np.ndarray]


@dataclass
class _Job:
    items: list[Any]
    future: asyncio.Future[np.ndarray]


@dataclass
class BatchStats:
    """What the batcher has done since it started (reported by ``GET /health``)."""

    requests: int = 0
    inputs: int = 0
    batches: int = 0
    failed_requests: int = 0
    largest_batch: int = 0
    busy_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "inputs": self.inputs,
            "batches": self.batches,
            "failed_requests": self.failed_requests,
            "mean_batch_inputs": round(self.inputs / self.batches, 2) if self.batches else 0.0,
            "largest_batch": self.largest_batch,
            "model_busy_s": round(self.busy_s, 3),
        }


def _bucket(n: int, max_batch: int) -> int:
    """The padded size of a batch of ``n``: the next power of two, capped at the larger of
    ``max_batch`` and ``n``."""
    return min(1 << max(0, n - 1).bit_length(), max(max_batch, n))


class MicroBatcher:
    """Group concurrent :meth:`submit` calls into batches of at most ``max_batch`` inputs.

    A request holding more than ``max_batch`` inputs runs as a batch of its own (the server
    bounds inputs per request separately). Call :meth:`start` inside the event loop that will
    await :meth:`submit`, and :meth:`stop` when it shuts down.
    """

    def __init__(self, predict: PredictFn, *, max_batch: int = 32, max_wait_s: float = 0.005):
        if max_batch < 1:
            raise ConfigError(
                f"--max-batch must be at least 1 (1 turns batching off); got {max_batch}"
            )
        if max_wait_s < 0:
            raise ConfigError(f"--max-wait-ms must be 0 or more; got {max_wait_s * 1000:g}")
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headstart-model")

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pool.shutdown(wait=True)

    async def submit(self, items: Sequence[Any]) -> np.ndarray:
        """Probabilities for ``items`` (one row each), computed in some batch with others."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called in this event loop")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(list(items), future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        carried: _Job | None = None
        while True:
            first = carried or await self._queue.get()
            carried = None
            jobs, n = [first], len(first.items)
            deadline = time.monotonic() + self.max_wait_s
            while n < self.max_batch:
                try:
                    if self._queue.empty() and deadline > time.monotonic():
                        job = await asyncio.wait_for(self._queue.get(), deadline - time.monotonic())
                    else:
                        job = self._queue.get_nowait()
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                if n + len(job.items) > self.max_batch:
                    carried = job  # starts the next batch
                    break
                jobs.append(job)
                n += len(job.items)
            await self._execute(jobs)

    async def _execute(self, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        live = [j for j in jobs if not j.future.cancelled()]
        if not live:
            return
        items = [x for j in live for x in j.items]
        padded = items + [items[-1]] * (_bucket(len(items), self.max_batch) - len(items))
        t0 = time.perf_counter()
        try:
            proba = (await loop.run_in_executor(self._pool, self.predict, padded))[: len(items)]
        except Exception as exc:
            if len(live) > 1:  # find the request that broke the batch: the others get answers
                for j in live:
                    await self._execute([j])
                return
            self.stats.failed_requests += 1
            if not live[0].future.done():
                live[0].future.set_exception(exc)
            return
        self._record(len(live), len(items), time.perf_counter() - t0)
        start = 0
        for j in live:
            rows = proba[start : start + len(j.items)]
            start += len(j.items)
            if not j.future.done():
                j.future.set_result(rows)

    def _record(self, requests: int, inputs: int, seconds: float) -> None:
        s = self.stats
        s.requests += requests
        s.inputs += inputs
        s.batches += 1
        s.busy_s += seconds
        s.largest_batch = max(s.largest_batch, inputs)
