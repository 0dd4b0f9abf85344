"""A JPEG is whole or refused, for the same reason by every reader: the end-of-image marker after the
image data, no marker that cannot be there, the size from the header, a regular file."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from engine.listing import Item
from engine.pipelines import dali_installed
from engine.pipelines.base import read_jpeg
from galaxy.errors import ImageReadError
from galaxy.io.images import MAX_RASTER_PIXELS, load_input, read_raster
from galaxy.io.jpeg import jpeg_damage
from tests.conftest import EXAMPLES

needs_dali = pytest.mark.skipif(not dali_installed(), reason="nvidia-dali is not installed")


@pytest.fixture
def cutout():
    return sorted(EXAMPLES.glob("*.jpeg"))[0]


def _saved(image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **options)
    return out.getvalue()


def test_whole_jpegs_of_every_kind_are_whole(cutout):
    source = Image.open(cutout)
    for mode in ("RGB", "L", "CMYK"):
        for options in ({}, {"progressive": True}, {"optimize": True}, {"quality": 1}, {"quality": 100, "subsampling": 0},
                        {"restart_marker_blocks": 1}, {"progressive": True, "restart_marker_blocks": 3},
                        {"comment": b"\xff\xd9 a comment holding markers \xff\xc0"}):
            data = _saved(source.convert(mode), **options)
            assert jpeg_damage(data) is None, (mode, options)
            assert jpeg_damage(data + b"\x00" * 64 + b"trailing bytes after the end") is None
    assert all(jpeg_damage(p.read_bytes()) is None for p in EXAMPLES.glob("*.jpeg"))


@pytest.mark.parametrize("kept", [0.5, 0.97, 0.995, -2])
def test_a_jpeg_cut_short_is_refused_by_both_readers_however_little_is_missing(tmp_path, cutout, kept):
    """DALI decodes only the crop's window: a file cut below it (or missing only its last bytes) was
    given a label, where PIL refused it as truncated."""
    data = cutout.read_bytes()
    cut = tmp_path / "cut.jpeg"
    cut.write_bytes(data[:kept] if kept == -2 else data[:int(len(data) * kept)])
    assert read_jpeg(cut) is None  # the batch decoders leave it to the reference reader
    with pytest.raises(ImageReadError, match="truncated: the image data ends before the end-of-image marker"):
        read_raster(cut)


def test_a_frame_header_inside_the_image_data_is_corrupt(tmp_path, cutout):
    """16 bytes overwritten in the middle of the scan held 0xFFC9: DALI gave the elliptical p_spiral
    0.98 where PIL stopped ("broken data stream")."""
    data = bytearray(cutout.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4] = b"\xff\xc9\x00\x11"
    bad = tmp_path / "bad.jpeg"
    bad.write_bytes(bytes(data))
    assert read_jpeg(bad) is None
    with pytest.raises(ImageReadError, match="corrupt image data: a 0xFFC9 marker inside the image data"):
        read_raster(bad)


def test_the_size_is_refused_from_the_header_by_both_readers(tmp_path, cutout):
    """The 256 Mpixel limit was never reached: PIL refused at 179 Mpixel with its own words (and warned
    from 89), and DALI had no limit (289 Mpixel classified)."""
    data = bytearray(cutout.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (20000).to_bytes(2, "big") * 2  # height, width
    big = tmp_path / "big.jpeg"
    big.write_bytes(bytes(data))
    assert read_jpeg(big) is None
    assert MAX_RASTER_PIXELS == 178_956_970  # PIL's own refusal level, not its warning level (89,478,485)
    with pytest.raises(ImageReadError, match="20000 x 20000 pixels is over the limit of 178,956,970"):
        read_raster(big)
    from galaxy.io.images import size_refusal

    assert size_refusal(10000, 10000) is None  # 100 Mpixel, over PIL's warning level: not refused for its size
    png = io.BytesIO()
    Image.new("RGB", (32, 32)).save(png, "PNG")
    data = bytearray(png.getvalue())
    data[16:24] = (20000).to_bytes(4, "big") * 2
    (tmp_path / "big.png").write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="over the limit"):
        read_raster(tmp_path / "big.png")
    (tmp_path / "empty.jpeg").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"an empty file \(0 bytes\)"):
        read_raster(tmp_path / "empty.jpeg")


def test_what_is_not_a_regular_file_is_refused_without_opening_it(tmp_path):
    """A FIFO named x.jpeg hung the run for ever (Ctrl-C too); a link to /dev/zero filled memory."""
    fifo = tmp_path / "pipe.jpeg"
    os.mkfifo(fifo)
    assert read_jpeg(fifo) is None
    with pytest.raises(ImageReadError, match=r"not a regular file \(a FIFO\)"):
        load_input(fifo, _spec())
    (tmp_path / "zero.jpeg").symlink_to("/dev/zero")
    assert read_jpeg(tmp_path / "zero.jpeg") is None
    with pytest.raises(ImageReadError, match=r"not a regular file \(a device\)"):
        load_input(tmp_path / "zero.jpeg", _spec())
    (tmp_path / "folder.jpeg").mkdir()
    with pytest.raises(ImageReadError, match="is a folder, not an image file"):
        load_input(tmp_path / "folder.jpeg", _spec())


def test_a_folder_that_cannot_be_listed_is_an_error_row_not_a_silent_gap(tmp_path, cutout, monkeypatch):
    """An unreadable sub-folder was skipped: exit 0, its images missing, nothing in the errors file."""
    import shutil

    from engine import listing

    (tmp_path / "in" / "locked").mkdir(parents=True)
    shutil.copy(cutout, tmp_path / "in" / "a.jpeg")
    shutil.copy(cutout, tmp_path / "in" / "locked" / "b.jpeg")
    locked = str(tmp_path / "in" / "locked")
    real_scandir, real_listdir = os.scandir, os.listdir

    def refuse(real):
        def call(path="."):
            if os.fspath(path) == locked:
                raise PermissionError(13, "Permission denied", locked)
            return real(path)
        return call

    monkeypatch.setattr(listing.os, "scandir", refuse(real_scandir))
    assert [item.path for item in listing.iter_inputs([str(tmp_path / "in")])] == [str(tmp_path / "in" / "a.jpeg"),
                                                                                   locked]
    monkeypatch.setattr(os, "listdir", refuse(real_listdir))
    with pytest.raises(ImageReadError, match=r"a folder that cannot be listed \(Permission denied\)"):
        load_input(locked, _spec())


def _spec():
    from galaxy.spec import InputSpec

    return InputSpec(size=64)


@pytest.mark.dali  # so that `-m "not dali"` deselects it as it does the other DALI tests
@needs_dali
def test_dali_and_the_reference_reader_take_and_refuse_the_same_files_whatever_their_neighbours(tmp_path, cutout):
    """A file DALI rejected sent its whole batch to the reference reader: whether a truncated file
    was refused depended on the other files of its batch. And DALI turned EXIF-oriented files, the
    reference reader did not (p_spiral 0.62 against 0.75 for one galaxy)."""
    from engine.pipelines.dali import create
    from engine.pipelines.reference import create as reference
    from galaxy.spec import InputSpec

    spec = InputSpec(size=64, mean=(0.07, 0.06, 0.04), std=(0.12, 0.1, 0.07))
    data = cutout.read_bytes()
    (tmp_path / "cut.jpeg").write_bytes(data[:int(len(data) * 0.97)])
    (tmp_path / "noeoi.jpeg").write_bytes(data[:-2])
    image = Image.open(cutout)
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(tmp_path / f"exif{orientation}.jpeg", quality=95, exif=exif)
    good = [cutout, *sorted(tmp_path.glob("exif*.jpeg"))]
    for batch in ([tmp_path / "cut.jpeg", *good], [tmp_path / "noeoi.jpeg", *good], good):
        items = [Item(str(p)) for p in batch]
        fast = list(create(spec, workers=2, depth=2, batch_size=8).decode(items))
        slow = list(reference(spec, workers=2, depth=2).decode(items))
        for a, b in zip(fast, slow):
            assert (a.error is None) == (b.error is None), a.path
            if a.error:
                assert a.error.reason == b.error.reason
            else:
                assert np.abs(a.tensor - b.tensor).max() < 1e-3, a.path


def test_a_folder_walk_leaves_out_hidden_files_and_folders(tmp_path, cutout):
    """macOS's AppleDouble ._x.jpeg (resource forks, no image) failed every run of a copied folder."""
    import shutil

    from engine.listing import iter_inputs

    (tmp_path / ".cache").mkdir()
    for name in ("x.jpeg", ".cache/y.jpeg"):
        shutil.copy(cutout, tmp_path / name)
    (tmp_path / "._x.jpeg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert [item.path for item in iter_inputs([str(tmp_path)])] == [str(tmp_path / "x.jpeg")]
    assert [item.path for item in iter_inputs([str(tmp_path / "._x.jpeg")])] == [str(tmp_path / "._x.jpeg")]


def test_stray_bytes_between_segments_are_skipped_as_libjpeg_skips_them(cutout):
    """The segment walk stopped at the first byte that was no marker and called such a file truncated;
    libjpeg (PIL) skips to the next marker with a warning and decodes it."""
    from galaxy.io.jpeg import jpeg_frame

    data = cutout.read_bytes()
    sos = data.index(b"\xff\xda")
    stray = data[:sos] + b"\x00\x00" + data[sos:]
    assert jpeg_damage(stray) is None and jpeg_frame(stray) == jpeg_frame(data)


def test_class_folders_and_unlabelled_folders_leave_out_hidden_files_too(tmp_path, cutout):
    """classify's walk left out ._x.jpeg, train's class folders and --unlabeled did not."""
    import shutil

    from galaxy.labels import list_unlabelled, load_labelled

    for name in ("elliptical", "spiral"):
        (tmp_path / name).mkdir()
        for k in range(2):
            shutil.copy(cutout, tmp_path / name / f"{name}{k}.jpeg")
        (tmp_path / name / "._x.jpeg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert "._x" not in load_labelled(tmp_path).ids and len(load_labelled(tmp_path)) == 4
    assert list_unlabelled([tmp_path / "spiral"])[1] == ("spiral0", "spiral1")


def test_a_12_bit_jpeg_is_refused_saying_so(tmp_path):
    """Pillow refuses precision other than 8 as unidentified: the reason read "not a JPEG or PNG image
    (unrecognised content)", and DALI failed the whole chunk it was in (review of image inputs, session 39)."""
    from click.testing import CliRunner

    from galaxy.cli import cli
    from galaxy.io.jpeg import SOF, _segments

    files = sorted(EXAMPLES.glob("*.jpeg"))[:3]
    folder = tmp_path / "in"
    folder.mkdir()
    for path in files:
        (folder / path.name).write_bytes(path.read_bytes())
    data = bytearray(files[0].read_bytes())
    at = next(i for i, marker in _segments(bytes(data)) if marker in SOF)
    data[at + 4] = 12  # the frame's bits per sample
    (folder / "deep.jpeg").write_bytes(bytes(data))
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(cli, ["classify", str(folder), "-o", str(out), "-q", "--backend", "onnxruntime"])
    assert result.exit_code == 3 and len(out.read_text().splitlines()) == 4
    assert "a 12-bit JPEG: only 8-bit JPEGs are read" in (tmp_path / "out.csv.errors.csv").read_text()
