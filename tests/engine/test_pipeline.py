import threading
import time

import numpy as np
import pytest

from engine.batching import batches
from engine.pipelines.base import Decoded, bounded_map, decode_stream
from engine.listing import Item, iter_inputs
from galaxy.io.images import stem_id
from galaxy.errors import ImageReadError, UsageError
from galaxy.spec import InputSpec
from tests.conftest import EXAMPLES


def fake_decoded(n, bad=()):
    out = []
    for i in range(n):
        if i in bad:
            out.append(Decoded(f"id{i}", f"p{i}", error=ImageReadError(f"p{i}", "broken")))
        else:
            out.append(Decoded(f"id{i}", f"p{i}", tensor=np.full((1, 2, 2), i, np.float32)))
    return out


def test_batches_keep_ids_with_pixels_and_the_last_is_short():
    failed = []
    got = list(batches(fake_decoded(10, bad={3, 7}), 3, failed.append, ))
    assert [b.n_valid for b in got] == [3, 3, 2]
    assert [f.id for f in failed] == ["id3", "id7"]
    for batch in got:
        assert batch.tensor.shape[0] == batch.n_valid == len(batch.ids)  # never padded: no caller trims
        for k, ident in enumerate(batch.ids):
            assert batch.tensor[k, 0, 0, 0] == int(ident[2:])  # the pixels belong to the id


def test_bounded_map_keeps_order_and_bounds_in_flight():
    lock, state = threading.Lock(), {"now": 0, "peak": 0}
    consumed = []

    def source():
        for i in range(50):
            consumed.append(i)
            yield i

    def work(i):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.001 * (i % 3))
        with lock:
            state["now"] -= 1
        return i * 2

    results = []
    for value in bounded_map(work, source(), workers=4, depth=6):
        results.append(value)
        assert len(consumed) <= len(results) + 6  # never reads far ahead of the consumer
    assert results == [i * 2 for i in range(50)]
    assert state["peak"] <= 4


def test_decode_stream_orders_shuffled_inputs_and_reports_errors(tmp_path):
    files = sorted(EXAMPLES.glob("*.jpeg"))[:6]
    bad = tmp_path / "bad.jpeg"
    bad.write_bytes(b"nope")
    items = [Item(str(p)) for p in files[::-1]]
    items.insert(2, Item(str(bad)))
    out = list(decode_stream(items, InputSpec(size=32), workers=3, depth=4))
    assert [d.path for d in out] == [i.path for i in items]
    assert out[2].error is not None and out[2].id == "bad"
    assert all(d.tensor.shape == (3, 32, 32) for k, d in enumerate(out) if k != 2)


def test_listing_is_recursive_and_filters_suffixes(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b" / "c.fits.gz").write_bytes(b"x")
    (tmp_path / "b" / "readme.txt").write_text("x")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    paths = [i.path for i in iter_inputs([str(tmp_path)])]
    assert sorted(paths) == [str(tmp_path / "a.jpg"), str(tmp_path / "b" / "c.fits.gz")]
    with pytest.raises(UsageError, match="does not exist"):
        list(iter_inputs([str(tmp_path / "missing")]))


def test_listing_is_sorted_by_name_whatever_the_file_system_order(tmp_path):
    import random

    names = [f"{k:03d}.jpeg" for k in range(60)]
    random.Random(1).shuffle(names)  # created in random order: scandir's order is not the names'
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "000.jpeg").write_bytes(b"x")  # the same stem again: it becomes 000#2, always
    paths = [i.path for i in iter_inputs([str(tmp_path)])]
    assert paths == [str(tmp_path / n) for n in sorted(names)] + [str(tmp_path / "sub" / "000.jpeg")]


def test_stem_id():
    assert stem_id("/x/587722.fits.gz") == "587722"
    assert stem_id("a/b/obj.JPEG") == "obj"


def test_prefetch_bounds_and_reraises():
    from engine.queues import prefetch

    produced = []

    def source():
        for i in range(20):
            produced.append(i)
            yield i
        raise ValueError("source broke")

    seen = []
    with pytest.raises(ValueError, match="source broke"):
        for value in prefetch(source(), depth=3):
            seen.append(value)
            time.sleep(0.002)
            assert len(produced) <= len(seen) + 4  # depth in the queue + one being put
    assert seen == list(range(20))


def test_a_closed_decode_stream_drops_the_decodes_not_started():
    """Closing the stream (Ctrl-C, SIGTERM) waited for every queued decode: with the reference reader's
    128 in flight and slow FITS files, past a batch scheduler's grace period."""
    import threading
    import time

    from engine.pipelines.base import bounded_map

    started, lock = [], threading.Lock()

    def slow(value):
        with lock:
            started.append(value)
        time.sleep(0.05)
        return value

    stream = bounded_map(slow, range(1000), workers=2, depth=64)
    assert next(stream) == 0
    stream.close()
    time.sleep(0.2)  # were the queued ones still running, more would start meanwhile
    assert len(started) <= 4, len(started)  # the first, and what the two workers had begun
