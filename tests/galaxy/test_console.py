"""The native-stderr filter: noise lines dropped, everything else passed on, no race at exit."""

from __future__ import annotations

import os
import threading

from galaxy.console import filter_native_stderr


def test_noise_lines_are_dropped_and_the_rest_passed_on(capfd):
    restore = filter_native_stderr()
    os.write(2, b"[ERROR] [libjpeg_turbo_decoder] Could not decode bad.jpeg\n")
    os.write(2, b"\x1b[0;31m[ERROR] \x1b[0m[jpeg_parser] Invalid marker\n")
    os.write(2, b"Input file read error\n")  # libjpeg's, for a JPEG cut in half (DALI's decoder)
    os.write(2, b"Invalid component ID 254 in SOS\n")  # libjpeg's, for a corrupt scan header
    os.write(2, b"a native warning that matters\n")
    os.write(2, b"the mirror's Input file read error is not libjpeg's\n")
    restore()
    err = capfd.readouterr().err
    assert "a native warning that matters" in err
    assert "the mirror's Input file read error is not libjpeg's" in err
    assert "libjpeg_turbo_decoder" not in err
    assert "jpeg_parser" not in err
    assert "\nInput file read error" not in "\n" + err and "Invalid component ID" not in err


def test_restoring_at_once_leaves_no_failed_thread(capfd):
    """A command that returns at once (`--help`) restores before the pump thread has run; the
    pump used to open the terminal's descriptor from its thread and then failed with EBADF."""
    failures = []
    previous = threading.excepthook
    threading.excepthook = lambda args: failures.append(args.exc_value)
    try:
        for _ in range(50):
            filter_native_stderr()()
    finally:
        threading.excepthook = previous
    assert failures == []
    assert "Traceback" not in capfd.readouterr().err
