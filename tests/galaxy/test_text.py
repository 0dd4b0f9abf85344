"""The text forms of ids and paths: FITS's ASCII escapes read back to the names they escaped."""

import pytest

from galaxy.catalog.text import ascii_text, unescape_ascii_text


@pytest.mark.parametrize("name", ["in dir é/a.jpeg", "tab\there\nnewline", "π/ü/😀.fits", "plain/x.fits", "a\x7fb"])
def test_ascii_text_reads_back_to_the_name(name):
    escaped = ascii_text(name)
    assert escaped.isascii() and unescape_ascii_text(escaped) == name


def test_what_is_no_escape_is_left_as_it_is():
    assert unescape_ascii_text(r"a\UFFFFFFFFb\xz1\u12") == r"a\UFFFFFFFFb\xz1\u12"
