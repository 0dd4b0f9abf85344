"""Bounded hand-over between pipeline stages running in different threads."""

from __future__ import annotations

import queue
import threading

_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(iterable, depth: int):
    """Iterate `iterable` in a background thread, at most `depth` items ahead of the consumer.

    Exceptions in the producer are re-raised in the consumer. When the consumer stops early
    (break, exception, garbage collection) the producer is told to stop and is joined.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be at least 1, got {depth}")
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value) -> bool:
        while not stop.is_set():
            try:
                box.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for value in iterable:
                if not put(value):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(_Failure(exc))
            return
        put(_END)

    thread = threading.Thread(target=produce, name="galaxy-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            value = box.get()
            if value is _END:
                return
            if isinstance(value, _Failure):
                raise value.exc
            yield value
    finally:
        stop.set()
        if threading.current_thread() is not thread:  # closed by the garbage collector in the producer itself
            thread.join(timeout=5)


def chunks(items, size: int):
    """Lists of `size` consecutive items (the last may be shorter), lazily."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
