"""The text forms of ids and paths: FITS's ASCII escapes read back to the names they escaped."""

import pytest

from galaxy.catalog.text import ascii_text, unescape_ascii_text


@pytest.mark.parametrize("name", ["in dir é/a.jpeg", "tab\there\nnewline", "π/ü/😀.fits", "plain/x.fits", "a\x7fb"])
def test_ascii_text_reads_back_to_the_name(name):
    escaped = ascii_text(name)
    assert escaped.isascii() and unescape_ascii_text(escaped) == name


def test_what_is_no_escape_is_left_as_it_is():
    assert unescape_ascii_text(r"a\UFFFFFFFFb\xz1\u12") == r"a\UFFFFFFFFb\xz1\u12"


def test_a_non_utf8_locale_still_writes_utf8_catalogs_and_says_what_it_means(tmp_path):
    """Under LC_ALL=C without Python's UTF-8 mode the journal was written in ASCII: a non-ASCII name ended
    the run in a UnicodeEncodeError traceback; other locales wrote catalogs in their own encoding."""
    import os
    import shutil
    import subprocess
    import sys

    from tests.conftest import EXAMPLES

    folder = tmp_path / "in"
    folder.mkdir()
    files = sorted(EXAMPLES.glob("*.jpeg"))
    shutil.copy(files[0], folder / "ü.jpeg")
    shutil.copy(files[1], folder / "plain.jpeg")
    for fmt in ("csv", "ecsv", "fits"):
        env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
        done = subprocess.run([sys.executable, "-m", "galaxy.cli", "classify", str(folder), "-o",
                               str(tmp_path / f"c.{fmt}"), "--backend", "onnxruntime"],
                              capture_output=True, env=env, timeout=300)
        stderr = done.stderr.decode("utf-8", "replace")
        assert done.returncode == 0, stderr
        assert "the locale's encoding is ascii, not UTF-8" in stderr
    text = (tmp_path / "c.csv").read_bytes().decode("utf-8")
    assert "in/ü.jpeg" in text.replace(str(tmp_path) + "/", "")
