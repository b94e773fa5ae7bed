"""Reading ahead and writing behind: the next files are read, and finished results written, in a
thread of their own while the network runs (decoding, zlib and the network release the GIL).

Never reorders anything: items come out, and writes happen, in the order they went in; an error
in the thread is raised in the caller, at the item or write it belongs to or at the end.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
# Reads ahead and writes queued at most: a few images, so memory stays a few images' worth.
AHEAD = 2
QUEUED = 4
_END = object()


def read_ahead(items: Iterable[T], read: Callable[[T], R], ahead: int = AHEAD) -> Iterator[tuple[T, R]]:
    """Yield ``(item, read(item))`` in order, reading up to ``ahead`` items before they are needed."""
    items = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as pool:
        queued: deque[tuple[T, Future]] = deque(
            (item, pool.submit(read, item)) for item in itertools.islice(items, ahead)
        )
        while queued:
            item, future = queued.popleft()
            following = next(items, _END)
            if following is not _END:
                queued.append((following, pool.submit(read, following)))
            try:
                yield item, future.result()
            except BaseException:
                for _, waiting in queued:
                    waiting.cancel()
                raise


class WriteBehind:
    """A context manager whose ``submit(write, *args)`` runs writes one at a time, in order, in a
    thread of its own; at most QUEUED wait at once. Leaving the block waits for every write and
    raises the first write's error."""

    def __init__(self, queued: int = QUEUED) -> None:
        self.queued = queued
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write-behind")
        self.futures: deque[Future] = deque()

    def __enter__(self) -> WriteBehind:
        return self

    def submit(self, write: Callable[..., Any], *args: Any) -> None:
        """Queue ``write(*args)``; wait first while QUEUED writes are pending."""
        while len(self.futures) >= self.queued:
            self.futures.popleft().result()
        self.futures.append(self.pool.submit(write, *args))

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if error is not None:
                for future in self.futures:
                    future.cancel()
            for future in self.futures:
                if future.cancelled():
                    continue
                if error is None:
                    future.result()
                else:
                    future.exception()  # waited for; the block's own error is the one raised
        finally:
            self.futures.clear()
            self.pool.shutdown(wait=True)
