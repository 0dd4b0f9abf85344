"""What reaches the terminal: the command's own lines, not native libraries' chatter.

Native libraries write to file descriptor 2 directly, past Python's logging: DALI's image codec
prints `[ERROR] [libjpeg_turbo_decoder] ...` or `[jpeg_parser] ...` for each corrupt JPEG, and
libjpeg's own message (`Input file read error`) for some (each file is already listed, with its
reason, in the errors file) and Ray's C++ core prints `[... E 123 456] core_worker.cc:...` lines
when an actor it will restart dies. `filter_native_stderr` routes descriptor 2 through a pipe
and a thread that drops those lines and passes every other byte on; Python's own `sys.stderr`
(messages, warnings, the progress bar, tracebacks) writes to the terminal directly.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading

log = logging.getLogger(__name__)

NATIVE_NOISE = re.compile(
    rb"\[\w+_(?:decoder|parser)\] "  # nvImageCodec (DALI): one line per file it cannot decode or parse
    # libjpeg's own messages for a corrupt or truncated file, printed by DALI's JPEG decoder
    rb"|^(?:Input file read error|Premature end of JPEG file|Corrupt JPEG data: .*|Not a JPEG file: .*"
    rb"|Invalid JPEG file structure: .*|Bogus marker length|Unsupported marker type 0x\w+"
    rb"|Invalid component ID \d+ in SOS|Invalid SOS parameters for sequential JPEG|Bogus (?:DHT|DQT) index \d+"
    rb"|Huffman table 0x\w+ was not defined|Quantization table 0x\w+ was not defined|Bogus Huffman table definition"
    rb"|JPEG datastream contains no image|Unsupported JPEG process: .*)\r?$"
    rb"|^\[[^\]]* [IWE] \d+ \d+\] \w+\.cc:\d+:"  # Ray's C++ log lines below FATAL
)


def filter_native_stderr(noise: re.Pattern = NATIVE_NOISE):
    """Drop the lines matching `noise` from what native code writes to descriptor 2.

    Returns:
        A function that restores descriptor 2 and waits (briefly) for the filter to drain.
    """
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    python_stderr = sys.stderr
    sys.stderr = io.TextIOWrapper(open(os.dup(terminal), "wb", buffering=0), encoding=python_stderr.encoding,
                                  errors="backslashreplace", line_buffering=True, write_through=True)

    # Both ends the pump uses are opened here, not in its thread: a command that returns at once
    # (`--help`) would otherwise close `terminal` before the thread duplicated it.
    pipe, out = open(read_end, "rb", buffering=0), open(os.dup(terminal), "wb", buffering=0)

    def pump():
        with pipe, out:
            for line in pipe:
                if not noise.search(line):
                    out.write(line)

    thread = threading.Thread(target=pump, name="galaxy-native-stderr", daemon=True)
    thread.start()

    def restore():
        sys.stderr.flush()
        sys.stderr = python_stderr
        os.dup2(terminal, 2)  # closes the pipe's last write end in this process: the pump sees EOF
        os.close(terminal)
        thread.join(timeout=1)

    return restore
