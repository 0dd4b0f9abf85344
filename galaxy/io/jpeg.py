"""What a JPEG's bytes say before anything decodes them: its frame (components, height, width) and
whether its image data is whole.

Both readers ask these questions of every JPEG, so a file is taken or refused for the same reason
whichever decodes it: DALI on the CPU decodes only the crop's window, so a file cut short below the
window, or whose last bytes are missing, decoded without complaint where the reference reader (PIL)
refused it as truncated; and whether DALI refused a file hung on the other files of its batch.
"""

from __future__ import annotations

import numpy as np

# Start-of-frame markers (baseline, extended, progressive, lossless; not DHT 0xC4, JPG 0xC8, DAC 0xCC).
SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Marker segments that may come between the scans of a (progressive) image: tables, restart
# interval, number of lines, the next scan, application data and comments.
_BETWEEN_SCANS = frozenset({0xC4, 0xCC, 0xDA, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)})
_SOS, _EOI = 0xDA, 0xD9


def _segments(data: bytes):
    """(position, marker) of each marker segment from the start of the file to the first scan's."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:  # stray bytes between segments: libjpeg skips to the next marker, with a warning
            i = data.find(b"\xff", i)
            if i < 0:
                return
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        yield i, marker
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")


def _start_of_frame(data: bytes) -> int | None:
    """Where a JPEG stream's start-of-frame segment begins (its marker, then length, precision, height,
    width, components), or None when it is not a JPEG or has none."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    return next((i for i, marker in _segments(data) if marker in SOF), None)


def jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(components, height, width) from a JPEG stream's start-of-frame header, or None when it is
    not a JPEG."""
    i = _start_of_frame(data)
    if i is None or i + 9 >= len(data):
        return None
    return data[i + 9], int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")


def jpeg_precision(data: bytes) -> int | None:
    """Bits per sample from a JPEG's start-of-frame header (8 for nearly every JPEG; 12 or 16 in medical
    and some scientific files, which Pillow and DALI do not decode), or None when it is not a JPEG."""
    i = _start_of_frame(data)
    return data[i + 4] if i is not None and i + 4 < len(data) else None


def jpeg_damage(data: bytes) -> str | None:
    """Why a JPEG's image data is not whole, or None when it is.

    From the first scan on, every marker (0xFF not followed by a stuffed 0x00, a fill 0xFF or a
    restart marker) must start a segment that may come between scans, until the end-of-image
    marker. Refused: no end-of-image marker after the image data (a file cut short, however
    little is missing: PIL refuses such files as truncated; a file whose data is whole and lacks
    only the marker, which PIL may decode, cannot be told from one cut short without decoding, and
    is refused too), and a marker that cannot be
    there (a second frame header: bytes overwritten inside the image data). Bytes after the
    end-of-image marker are not read. Corrupt entropy-coded bytes that form no marker are not
    found here (only a decode finds them, and libjpeg then only warns).
    """
    start = next((i for i, marker in _segments(data) if marker == _SOS), None)
    if start is None:
        return "truncated: the file ends before its image data (no start-of-scan marker)"
    tail = np.frombuffer(data, np.uint8)[start:]
    follower = tail[1:]
    markers = np.flatnonzero((tail[:-1] == 0xFF) & (follower != 0x00) & (follower != 0xFF)
                             & ((follower < 0xD0) | (follower > 0xD7)))
    skip_to = 0
    for at in markers.tolist():
        if at < skip_to:  # inside a segment's own bytes (a table, a comment)
            continue
        marker = int(tail[at + 1])
        if marker == _EOI:
            return None
        if marker not in _BETWEEN_SCANS:
            return f"corrupt image data: a 0xFF{marker:02X} marker inside the image data"
        skip_to = at + 2 + int.from_bytes(bytes(tail[at + 2:at + 4]), "big")
    return "truncated: the image data ends before the end-of-image marker"
