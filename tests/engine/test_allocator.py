"""glibc's malloc kept from handing image-sized blocks back on every free (engine/allocator.py)."""

import sys

import pytest

from engine.allocator import tune_allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_the_allocator_is_tuned_unless_the_environment_sets_it(monkeypatch):
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "gnu_get_libc_version"):
        pytest.skip("not glibc (musl's mallopt does nothing)")
    assert tune_allocator() is True
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072")  # the user's own settings win
    assert tune_allocator() is False
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert tune_allocator() is False


def test_the_galaxy_program_and_bench_tune_it_first(monkeypatch):
    """Both start the work in a process whose freed image arrays stay in it (set in their main)."""
    from engine import allocator, benchmark
    from galaxy import cli

    called = []
    monkeypatch.setattr(allocator, "tune_allocator", lambda: called.append(True) or True)
    monkeypatch.setattr(sys, "argv", ["galaxy", "--help"])
    with pytest.raises(SystemExit):
        cli.main()
    with pytest.raises(SystemExit):
        benchmark.main(["--help"])
    assert called == [True, True]
