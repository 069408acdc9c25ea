"""Micro-batching: concurrent requests share one encoder call.

Requests queue their items; one worker takes everything queued (waiting up to ``window_s`` for
more while the batch is below ``max_batch``) and runs the encoder once in its own thread. Under
load the encoder is busy while new requests queue, so batches grow with load and throughput
follows; at low load a request waits at most ``window_s``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class MicroBatcher:
    def __init__(self, fn: Callable[[list], np.ndarray], max_batch: int = 16, window_s: float = 0.002):
        self.fn = fn
        self.max_batch = max_batch
        self.window_s = window_s
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.items = 0
        self.on_batch: Callable[[int], None] | None = None  # e.g. a metrics histogram's observe

    async def submit(self, items: list) -> np.ndarray:
        """Encode ``items`` (in a shared batch); returns their (len(items), d) rows."""
        if self.task is None:
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((items, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            count = len(batch[0][0])
            deadline = loop.time() + self.window_s
            while count < self.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self.queue.get(), remaining)
                    except TimeoutError:
                        break
                batch.append(nxt)
                count += len(nxt[0])
            items = [x for its, _ in batch for x in its]
            try:
                out = await loop.run_in_executor(self.executor, self.fn, items)
            except Exception as e:  # the requests see the error; the worker lives on
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            self.items += len(items)
            if self.on_batch is not None:
                self.on_batch(len(items))
            start = 0
            for its, fut in batch:
                if not fut.done():
                    fut.set_result(out[start : start + len(its)])
                start += len(its)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
