"""Crash safety: killed runs resume without losing or repeating a row; one writer per output."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from engine.journal import Journal
from engine.run import classify
from galaxy.config import ClassifyConfig
from galaxy.errors import UsageError
from tests.conftest import EXAMPLES


def survey(tmp_path, copies):
    folder = tmp_path / "survey"
    folder.mkdir()
    for k in range(copies):
        for path in EXAMPLES.glob("*.jpeg"):
            (folder / f"{path.stem}_{k}.jpeg").symlink_to(path)
    (folder / "broken.jpeg").write_bytes(b"\xff\xd8\xff not really")
    return folder


def rows_by_path(path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_path = {r["path"]: r for r in rows}
    assert len(by_path) == len(rows), "a row was written twice"
    return by_path


def run_cli(folder, out, *extra):
    # The full model: slow enough (1,200 images take ~15 s) that a kill lands mid-run.
    return [sys.executable, "-m", "galaxy.cli", "classify", str(folder), "-o", str(out), "-q", "--model",
            "sdss-xception", "--backend", "onnxruntime", "--batch-size", "8", "--commit-every", "40", *extra]


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    folder = survey(tmp_path, copies=30)  # 1200 good images + 1 broken
    reference = tmp_path / "reference.csv"
    assert subprocess.run(run_cli(folder, reference)).returncode == 3
    out = tmp_path / "killed.csv"
    partial = tmp_path / "killed.csv.partial"
    rng = random.Random(7)
    killed_mid_run = 0
    for _ in range(3):  # each kill after the run has committed a new chunk, not after a fixed sleep
        before = len(list(partial.glob("chunk-*.csv")))
        proc = subprocess.Popen(run_cli(folder, out))
        deadline = time.monotonic() + 120
        while proc.poll() is None and len(list(partial.glob("chunk-*.csv"))) <= before \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.5))  # mid-batch, mid-chunk or mid-write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_mid_run += partial.exists()
    assert killed_mid_run, "every kill came after the run had finished: nothing was tested"
    assert subprocess.run(run_cli(folder, out)).returncode == 3
    expected, got = rows_by_path(reference), rows_by_path(out)
    assert set(got) == set(expected) and len(got) == 1200
    for path, row in expected.items():
        assert got[path]["id"] == row["id"] and got[path]["label"] == row["label"]
        assert abs(float(got[path]["p_spiral"]) - float(row["p_spiral"])) < 1e-5
    errors = list(csv.DictReader(open(tmp_path / "killed.csv.errors.csv")))
    assert [e["path"] for e in errors] == [str(folder / "broken.jpeg")]
    assert not (tmp_path / "killed.csv.partial").exists()


def test_second_writer_is_refused(tmp_path):
    out = tmp_path / "c.csv"
    holder = Journal(out, ("elliptical", "spiral"), {"weights": "x"})
    try:
        with pytest.raises(UsageError, match="another galaxy classify is writing"):
            classify(ClassifyConfig((str(EXAMPLES),), str(out), backend="onnxruntime", progress=False))
    finally:
        holder.release()


def test_rerun_with_other_settings_is_refused_and_overwrite_starts_over(tmp_path):
    files = tuple(str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:3])
    out = tmp_path / "c.parquet"
    first = classify(ClassifyConfig(files, str(out), backend="onnxruntime", progress=False))
    assert first.classified == 3
    again = classify(ClassifyConfig(files, str(out), backend="onnxruntime", progress=False))
    assert (again.classified, again.resumed, again.total) == (0, 3, 3)
    with pytest.raises(UsageError, match=r"other settings \(tta false then, true now\)"):
        classify(ClassifyConfig(files, str(out), backend="onnxruntime", tta=True, progress=False))
    fresh = classify(ClassifyConfig(files[:2], str(out), backend="onnxruntime", tta=True, overwrite=True,
                                    progress=False))
    assert (fresh.classified, fresh.resumed, fresh.total) == (2, 0, 2)


def test_a_rerun_naming_the_same_files_another_way_writes_no_row_twice(tmp_path, monkeypatch):
    """A rerun naming the folder by its absolute path, or through a link to it, wrote every row a
    second time (ids #2); one from another working directory, with relative paths in the catalog,
    is refused (its rows' paths are from where the run began)."""
    import shutil

    folder = tmp_path / "img"
    folder.mkdir()
    for path in sorted(EXAMPLES.glob("*.jpeg"))[:3]:
        shutil.copy(path, folder)
    (tmp_path / "link").symlink_to(folder)
    monkeypatch.chdir(tmp_path)

    def run(inputs, out="c.csv", **options):
        return classify(ClassifyConfig(inputs, out, backend="onnxruntime", progress=False, **options))

    assert run(("img",)).classified == 3
    for spelling in ((str(folder),), ("link",), ("./img/",)):
        again = run(spelling)
        assert (again.classified, again.resumed, again.total) == (0, 3, 3), spelling
    monkeypatch.chdir(folder)
    with pytest.raises(UsageError, match=f"was begun in {tmp_path}, and its rows name files from there"):
        run((".",), str(tmp_path / "c.csv"))
    assert run((".",), str(tmp_path / "c.csv"), overwrite=True).total == 3  # --overwrite starts over from here
    assert run((str(folder),), str(tmp_path / "c.csv")).resumed == 3


@pytest.mark.parametrize("fmt", ["csv", "parquet", "fits"])
def test_a_run_begun_in_a_folder_named_in_bytes_that_are_not_utf8_resumes(tmp_path, monkeypatch, fmt):
    """Its journal's record of the folder had been a UnicodeEncodeError, and a Parquet or FITS catalog's (the
    name escaped, as those formats write it) named no folder, so a rerun was refused (review, session 45)."""
    import shutil

    folder = tmp_path / os.fsdecode(b"dir\xff")
    (folder / "img").mkdir(parents=True)
    for path in sorted(EXAMPLES.glob("*.jpeg"))[:3]:
        shutil.copy(path, folder / "img")
    monkeypatch.chdir(folder)
    config = ClassifyConfig(("img",), f"c.{fmt}", backend="onnxruntime", progress=False)
    assert classify(config).classified == 3
    again = classify(config)
    assert (again.classified, again.resumed) == (0, 3)


def test_a_file_named_like_an_escape_is_not_another_files_row_on_resume(tmp_path):
    """`ü.jpeg` and a file literally named `\\xfc.jpeg` had one key (the ASCII-escaped form): a rerun
    after the first was classified skipped the second and wrote the first again."""
    import shutil

    folder = tmp_path / "d"
    folder.mkdir()
    first, second = sorted(EXAMPLES.glob("*.jpeg"))[:2]
    shutil.copy(first, folder / "ü.jpeg")
    shutil.copy(second, folder / "\\xfc.jpeg")
    out = tmp_path / "z.csv"
    classify(ClassifyConfig((str(folder / "ü.jpeg"),), str(out), backend="onnxruntime", progress=False))
    again = classify(ClassifyConfig((str(folder),), str(out), backend="onnxruntime", progress=False))
    assert (again.classified, again.resumed, again.total) == (1, 1, 2)
    with open(out, newline="") as fh:
        assert sorted(row["path"].rsplit("/", 1)[1] for row in csv.DictReader(fh)) == ["\\xfc.jpeg", "ü.jpeg"]


def test_overwrite_in_another_format_removes_the_csv_sidecar(tmp_path):
    """--overwrite into the same name in Parquet left the CSV's meta.json, which a later rerun read as
    the catalog's settings ("written with another model, backend, TTA setting ...")."""
    files = tuple(str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:2])
    out = tmp_path / "r.csv"
    classify(ClassifyConfig(files, str(out), backend="onnxruntime", tta=True, progress=False))
    assert (tmp_path / "r.csv.meta.json").exists()
    classify(ClassifyConfig(files, str(out), backend="onnxruntime", output_format="parquet", overwrite=True,
                            progress=False))
    assert not (tmp_path / "r.csv.meta.json").exists()
    again = classify(ClassifyConfig(files, str(out), backend="onnxruntime", output_format="parquet", progress=False))
    assert again.resumed == 2


def test_a_fits_catalog_written_into_an_input_folder_is_not_an_input_of_the_rerun(tmp_path):
    """The rerun listed the catalog it had written (a .fits file in the input folder) as an input,
    and failed on it (exit 3, "no HDU with 2-D or 3-D image data")."""
    import shutil

    for path in sorted(EXAMPLES.glob("*.jpeg"))[:2]:
        shutil.copy(path, tmp_path)
    out = tmp_path / "cat.fits"
    assert classify(ClassifyConfig((str(tmp_path),), str(out), backend="onnxruntime", progress=False)).classified == 2
    again = classify(ClassifyConfig((str(tmp_path),), str(out), backend="onnxruntime", progress=False))
    assert (again.classified, again.failed, again.resumed) == (0, 0, 2)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_output_where_nothing_can_be_written_is_a_usage_error_before_any_work(tmp_path):
    """As root os.access says yes everywhere: -o /proc/x.csv failed after the model loaded, exit 1,
    naming the internal x.csv.partial."""
    from click.testing import CliRunner

    from galaxy.cli import cli

    result = CliRunner().invoke(cli, ["classify", str(EXAMPLES), "-o", "/proc/x.csv", "-q"])
    assert result.exit_code == 2 and "cannot write /proc/x.csv" in result.output, result.output
    assert ".partial" not in result.output


@pytest.mark.parametrize("suffix", [".csv", ".ecsv", ".parquet", ".fits"])
def test_an_existing_table_galaxy_did_not_write_is_refused_as_output_and_left_as_it_is(tmp_path, suffix):
    """A table of the user's own given as -o was called damaged ('row 1, was changed after it was written
    (it has no id)'), and --overwrite, which deletes it, named as the way on. A catalog galaxy wrote without
    a run record (a version before it) is still taken for one: its id, path and p_ columns."""
    import numpy as np
    from astropy.table import Table

    out = tmp_path / f"survey{suffix}"
    Table({"objid": [1, 2], "ra": [1.5, 2.5]}).write(out)
    before = out.read_bytes()
    with pytest.raises(UsageError) as refused:
        _journal(out)
    assert str(refused.value) == f"{out} exists and is not a catalog written by galaxy classify: give another -o"
    assert out.read_bytes() == before and not (tmp_path / f"survey{suffix}.partial").exists()

    ours = tmp_path / f"ours{suffix}"
    journal = _journal(ours)
    journal.add(["a"], ["a.jpeg"], np.full((1, 2), 0.5, np.float32))
    journal.finish({})  # no run record
    assert _journal(ours).resumed == 1


def test_resuming_an_output_of_another_format_is_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from galaxy.cli import cli

    files = [str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:2]]
    out = tmp_path / "catalog.csv"
    assert CliRunner().invoke(cli, ["classify", *files, "-o", str(out), "-q", "--backend", "onnxruntime"]).exit_code == 0
    result = CliRunner().invoke(cli, ["classify", *files, "-o", str(out), "-q", "--backend", "onnxruntime",
                                      "--format", "parquet"])
    assert result.exit_code == 2, result.output  # was a pyarrow traceback and exit 1
    assert f"{out} exists but cannot be read as a parquet catalog" in result.output and "--overwrite" in result.output
    assert "Traceback" not in result.output


def test_rows_are_committed_after_commit_seconds_even_when_few(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import numpy as np

    import engine.journal

    now = [1000.0]  # the journal's clock, moved by the test: no sleep, no dependence on the machine's load
    monkeypatch.setattr(engine.journal, "time", SimpleNamespace(monotonic=lambda: now[0]))
    journal = Journal(tmp_path / "c.csv", ("elliptical", "spiral"), {"weights": "x"}, commit_rows=10**6,
                      commit_seconds=0.2)
    now[0] += 0.1
    journal.add(["a"], ["a.jpeg"], np.array([[0.2, 0.8]]))
    assert not list(journal.dir.glob("chunk-*.csv"))  # neither enough rows nor enough time yet
    now[0] += 0.15
    journal.add(["b"], ["b.jpeg"], np.array([[0.3, 0.7]]))
    assert [len(list(csv.reader(open(c)))) for c in journal.dir.glob("chunk-*.csv")] == [2]  # a kill keeps both
    journal.release()


def _journal(out, **options):
    return Journal(out, ("elliptical", "spiral"), {"weights": "w", "backend": "b"}, **options)


def test_finishing_leaves_no_journal_a_rerun_could_trust_and_chunks_are_never_written_over(tmp_path):
    """A kill while a finished run deleted OUT.partial/ left some chunks, which the rerun trusted
    over the complete catalog, numbering its new chunk by count: over a surviving one (rows lost,
    others written twice). The journal now goes in one rename; chunks are numbered after the last."""
    import numpy as np

    out = tmp_path / "c.csv"
    journal = _journal(out, commit_rows=1)
    for name in "abc":  # one chunk each
        journal.add([name], [f"{name}.jpeg"], np.full((1, 2), 0.5, np.float32))
    (journal.dir / "chunk-000000.csv").unlink()  # as a kill halfway through deleting them left it
    journal._chunks = sorted(journal.dir.glob("chunk-*.csv"))
    journal.add(["d"], ["d.jpeg"], np.full((1, 2), 0.5, np.float32))
    journal.commit()
    assert [row[0] for row in journal.rows()] == ["b", "c", "d"]  # c's chunk was not written over
    (tmp_path / f".{journal.dir.name}.done-1").mkdir()  # a finished run killed while tidying up
    assert journal.finish({}) == 3
    assert not journal.dir.exists()
    rerun = _journal(out)
    assert rerun.resumed == 3 and not list(tmp_path.glob(".*done-*"))
    rerun.release()


def test_a_file_listed_twice_is_classified_twice_across_a_resume(tmp_path):
    """A catalog may name one file in two rows (two ids): each row is its own result. Resuming
    matched by path only, and skipped the second listing too."""
    import numpy as np

    out = tmp_path / "c.csv"
    journal = _journal(out)
    journal.add(["first"], ["same.jpeg"], np.full((1, 2), 0.5, np.float32))
    journal.release()  # killed: the second listing of same.jpeg was not reached
    rerun = _journal(out)
    assert rerun.is_done("same.jpeg") and not rerun.is_done("same.jpeg")
    rerun.release()
    spelled = _journal(out)
    assert spelled.is_done("./same.jpeg")  # the same file named another way is not classified again
    spelled.release()


def test_kept_columns_keep_their_kind_and_place_whatever_is_blank():
    from galaxy.catalog.write import column_kinds

    rows = [{"ra": "10.5", "dec": "", "z": "", "code": "007"}, {"ra": "11", "dec": "-1.25", "z": "", "code": "12"}]
    assert column_kinds(rows) == [("ra", "float"), ("dec", "float"), ("z", "text"), ("code", "text")]
    rows = [{"objid": "588848901537202307", "run": "756"}, {"objid": "588848901537202306", "run": ""}]
    assert column_kinds(rows) == [("objid", "int"), ("run", "int")]


def test_a_crop_recorded_as_auto_by_an_earlier_version_resumes_at_the_crop_measured(tmp_path):
    from engine.fingerprint import keep_fingerprint

    path = tmp_path / "fingerprint.json"
    path.write_text('{"weights": "w", "crop": "auto"}')  # before 2026-11-29: the word, not the crop
    keep_fingerprint(path, {"weights": "w", "crop": 0.61}, "c.csv")
    with pytest.raises(UsageError, match="crop"):  # from then on the crop is held
        keep_fingerprint(path, {"weights": "w", "crop": 0.55}, "c.csv")


def test_a_csv_catalog_that_lost_its_sidecar_is_not_continued_blindly(tmp_path):
    """The sidecar holds the run's settings: without it a rerun with another backend was accepted."""
    import numpy as np

    out = tmp_path / "c.csv"
    journal = _journal(out)
    journal.add(["a"], ["a.jpeg"], np.full((1, 2), 0.5, np.float32))
    journal.finish({"run": '{"weights": "w", "backend": "b"}'})
    import shutil

    continued = _journal(out)
    assert continued.resumed == 1  # with its sidecar: continued
    continued.release()
    shutil.rmtree(tmp_path / "c.csv.partial")  # the rerun's own journal, as if it had never started
    (tmp_path / "c.csv.meta.json").unlink()
    with pytest.raises(UsageError, match="has lost c.csv.meta.json"):
        _journal(out)


@pytest.mark.parametrize("suffix", [".csv", ".fits", ".parquet", ".ecsv"])
def test_a_rerun_of_a_finished_catalog_keeps_kept_text_as_it_was(tmp_path, suffix):
    """A rerun reads the finished catalog back into its journal: kept text 'nan' and '--' came back
    as missing values, whatever the format."""
    from click.testing import CliRunner

    from galaxy.catalog.written import read_catalog_rows
    from galaxy.cli import cli

    files = sorted(EXAMPLES.glob("*.jpeg"))[:4]
    table = tmp_path / "in.csv"
    table.write_text("file,note\n" + "".join(f"{f},{note}\n" for f, note in zip(files, ["nan", "--", "", "x"])))
    out = tmp_path / f"c{suffix}"
    command = ["classify", "--catalog", str(table), "--keep-columns", "note", "-o", str(out), "-q"]
    for _ in range(2):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0, result.output
        assert [r["note"] for r in read_catalog_rows(out)] == ["nan", "--", "", "x"]


def test_naming_the_models_own_crop_or_not_is_one_setting(tmp_path):
    """`--crop-fraction 0.5` on a model read at 0.5, then the same command without it, was refused as
    another crop (the fingerprint holds the crop only when it is given)."""
    from click.testing import CliRunner

    from galaxy.card import load_card, model_path
    from galaxy.cli import cli

    own = load_card(model_path("sdss-xception-compact")).input_spec.crop_fraction
    files = [str(f) for f in sorted(EXAMPLES.glob("*.jpeg"))[:3]]
    out = tmp_path / "c.csv"
    for crop in ([f"--crop-fraction={own}"], [], [f"--crop-fraction={own}"]):
        result = CliRunner().invoke(cli, ["classify", *files, "-o", str(out), "-q", "--backend", "onnxruntime", *crop])
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["classify", *files, "-o", str(out), "-q", "--backend", "onnxruntime",
                                      f"--crop-fraction={own * 0.9}"])
    assert result.exit_code == 2 and "crop" in result.output


@pytest.mark.parametrize("suffix", [".csv", ".fits", ".parquet"])
def test_a_full_disk_while_assembling_names_the_catalog_and_leaves_no_hidden_files(tmp_path, monkeypatch, suffix):
    """ENOSPC in the last step said only "No space left on device" and left the hidden assembling file
    (and FITS's spool) on the full disk, holding the space the user was told to free."""
    import errno

    from galaxy.catalog import write

    files = tuple(str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:5])
    out = tmp_path / f"c{suffix}"
    real_close = write.CatalogWriter.close

    def full(self):
        real_close(self)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(write.CatalogWriter, "close", full)
    with pytest.raises(OSError) as caught:
        classify(ClassifyConfig(files, str(out), backend="onnxruntime", progress=False))
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"c{suffix}.partial"]  # the journal, for a rerun
    monkeypatch.setattr(write.CatalogWriter, "close", real_close)
    again = classify(ClassifyConfig(files, str(out), backend="onnxruntime", progress=False))
    assert (again.classified, again.resumed) == (0, 5) and out.is_file()


def test_a_second_interrupt_while_assembling_leaves_the_journal_and_no_hidden_files(tmp_path, monkeypatch, caplog):
    """Only an OSError cleaned up: a second Ctrl-C (or SIGTERM) during the final assembly left the hidden
    assembling files and, in the same process, the lock; and a Ctrl-C there, after every image was
    classified, said only "interrupted (Ctrl-C)"."""
    from galaxy.catalog import write

    files = tuple(str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:5])
    out = tmp_path / "c.fits"

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(write.CatalogWriter, "close", interrupted)
    with pytest.raises(KeyboardInterrupt):
        classify(ClassifyConfig(files, str(out), backend="onnxruntime", progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.fits.partial"]
    assert f"interrupted while {out} was written: the rows classified so far are kept in" in caplog.text
    monkeypatch.undo()
    assert classify(ClassifyConfig(files, str(out), backend="onnxruntime", progress=False)).resumed == 5


def test_an_interrupt_while_the_catalog_of_an_interrupted_run_is_written_says_where_the_rows_are(
        tmp_path, monkeypatch, caplog):
    """Ctrl-C twice: the second, during the assembly, ended with a bare "interrupted (Ctrl-C)" and no
    catalog, though every row classified was kept for a rerun."""
    from engine.runner import Runner
    from galaxy.catalog import write

    files = tuple(str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:5])
    out = tmp_path / "c.csv"
    run = Runner.run

    def first(self, *args, **kwargs):
        yield next(run(self, *args, **kwargs))
        raise KeyboardInterrupt

    def second(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, "run", first)
    monkeypatch.setattr(write.CatalogWriter, "close", second)
    with pytest.raises(KeyboardInterrupt):
        classify(ClassifyConfig(files, str(out), backend="onnxruntime", batch_size=2, progress=False))
    assert f"interrupted again while {out} was written: the rows classified so far are kept in " \
           f"{tmp_path / 'c.csv.partial'}; rerun the same command" in caplog.text
    monkeypatch.undo()
    again = classify(ClassifyConfig(files, str(out), backend="onnxruntime", progress=False))
    assert (again.resumed, again.classified) == (2, 3)


def test_a_further_interrupt_while_the_process_exits_ends_it_at_once(tmp_path):
    """A second Ctrl-C while DALI's exit handler shut its pipelines down printed a traceback."""
    import signal
    import subprocess
    import sys

    script = ("import atexit, time\n"
              "from galaxy.errors import end_at_once_on_interrupt\n"
              "atexit.register(lambda: (print('exiting', flush=True), time.sleep(60)))\n"
              "end_at_once_on_interrupt(130)\n"
              "raise SystemExit(130)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline() == "exiting\n"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 130 and proc.stderr.read() == ""


@pytest.mark.parametrize("record", ["[1]", "{not json", ""])
def test_a_damaged_journal_fingerprint_is_a_usage_error_not_a_traceback(tmp_path, record):
    files = tuple(str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:2])
    out = tmp_path / "c.csv"
    (tmp_path / "c.csv.partial").mkdir()
    (tmp_path / "c.csv.partial" / "fingerprint.json").write_text(record)
    for backend in ("auto", "onnxruntime"):  # auto reads it first, to continue with the run's backend
        with pytest.raises(UsageError, match=r"the settings its run began with .* cannot be read; use --overwrite"):
            classify(ClassifyConfig(files, str(out), backend=backend, progress=False))


def _without_descriptions(out):
    """`out` as a version before column descriptions wrote it."""
    import json
    import re

    if out.suffix == ".csv":
        sidecar = out.with_name(out.name + ".meta.json")
        sidecar.write_text(json.dumps({k: v for k, v in json.loads(sidecar.read_text()).items() if k != "columns"}))
    elif out.suffix == ".ecsv":
        out.write_text(re.sub(r", description: [^}]*}", "}", out.read_text()))
    elif out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        metadata = {k: re.sub(rb", description: [^}]*}", b"}", v) for k, v in table.schema.metadata.items()}
        table = table.cast(pa.schema([pa.field(f.name, f.type) for f in table.schema]))
        pq.write_table(table.replace_schema_metadata(metadata), out)
    else:
        from astropy.io import fits

        with fits.open(out, mode="update") as hdul:
            header = hdul[1].header
            for key in {k for k in header if k.startswith("TCOMM") or k == "COMMENT"}:  # each COMMENT at once
                del header[key]
            for n in range(1, header["TFIELDS"] + 1):
                header.comments[f"TTYPE{n}"] = ""


@pytest.mark.parametrize("suffix", [".csv", ".fits", ".parquet", ".ecsv"])
def test_a_catalog_without_descriptions_resumes_and_comes_out_described(tmp_path, suffix):
    """Catalogs written before columns were described are continued, and the finished catalog
    describes its own columns and the kept ones (here from an ECSV input catalog)."""
    import json

    from astropy.table import Table

    from galaxy.catalog.written import read_catalog_rows

    files = [str(f) for f in sorted(EXAMPLES.glob("*.jpeg"))[:3]]
    table = tmp_path / "in.ecsv"
    out = tmp_path / f"c{suffix}"

    def run(n):
        catalog = Table({"file": files[:n], "z": [0.1, 0.2, 0.3][:n]})
        catalog["z"].description = "spectroscopic redshift"
        catalog.write(table, overwrite=True)
        return classify(ClassifyConfig((), str(out), catalog=str(table), keep_columns=("z",), backend="onnxruntime",
                                       progress=False))

    run(2)
    _without_descriptions(out)
    before = list(read_catalog_rows(out))
    again = run(3)
    assert (again.classified, again.resumed) == (1, 2)
    assert list(read_catalog_rows(out))[:2] == before
    if suffix == ".csv":
        columns = json.loads(out.with_name(out.name + ".meta.json").read_text())["columns"]
        described = {name: c.get("description") for name, c in columns.items()}
    else:
        described = {name: column.description for name, column in Table.read(out).columns.items()}
    assert described["p_spiral"] == "calibrated probability of class spiral"
    assert described["z"] == "spectroscopic redshift"


@pytest.mark.parametrize("suffix", [".csv", ".ecsv", ".fits", ".parquet"])
def test_a_rerun_of_odd_file_names_gives_the_rows_and_ids_of_a_fresh_run(tmp_path, suffix):
    """A rerun compared the rows a finished catalog gives back (FITS: ASCII escapes; ECSV: control
    characters escaped) with new inputs in another form: in FITS a mended `b/é.jpeg` took the id `é`
    (written `\\xe9`, the id of `a/é.jpeg` already); in ECSV a file with a tab in its name was
    classified again on every rerun."""
    from galaxy.catalog.written import read_catalog_rows

    jpegs = sorted(EXAMPLES.glob("*.jpeg"))
    names = {"a/é.jpeg": jpegs[0], "b/x.jpeg": jpegs[1], "b/é.jpeg": jpegs[2], "b/t\tab.jpeg": jpegs[3]}
    folder = tmp_path / "in"
    for name, source in names.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(source.read_bytes())

    def run(out):
        return classify(ClassifyConfig(inputs=(str(folder),), output=str(out), backend="onnxruntime", progress=False))

    fresh = tmp_path / f"fresh{suffix}"
    run(fresh)
    (folder / "b/é.jpeg").write_bytes(jpegs[2].read_bytes()[:300])
    out = tmp_path / f"out{suffix}"
    assert run(out).failed == 1
    (folder / "b/é.jpeg").write_bytes(jpegs[2].read_bytes())
    assert run(out).classified == 1
    assert run(out).classified == 0  # nothing left to do, whatever the names
    rows, expected = list(read_catalog_rows(out)), list(read_catalog_rows(fresh))
    assert sorted((r["id"], r["path"]) for r in rows) == sorted((r["id"], r["path"]) for r in expected)
    assert len({r["id"] for r in rows}) == len(names)


def test_the_catalog_is_on_disk_before_its_journal_is_deleted(tmp_path, monkeypatch):
    """CSV, ECSV and Parquet catalogs were never fsynced: a power cut just after a run could leave an empty
    catalog and no journal to rebuild it from."""
    import engine.journal as journal_module
    from engine.fingerprint import journal_dir

    out, synced = tmp_path / "c.csv", []
    real = journal_module.sync_to_disk

    def recording(*paths):
        synced.append(([str(p) for p in paths], journal_dir(out).exists()))
        real(*paths)

    monkeypatch.setattr(journal_module, "sync_to_disk", recording)
    classify(ClassifyConfig(inputs=(str(EXAMPLES),), output=str(out), backend="onnxruntime", progress=False))
    assert [with_journal for _, with_journal in synced] == [True, True]  # both before the journal went
    assert str(out) in synced[-1][0] and any(".c.csv.assembling" in p for p in synced[0][0])


def test_a_file_system_that_cannot_sync_a_folder_still_gets_its_catalog(tmp_path, monkeypatch):
    """fsync of a folder is refused (EINVAL) on some FUSE and network mounts: every run there ended in a
    traceback, its catalog never assembled."""
    import errno
    import stat

    real = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "c.csv"
    summary = classify(ClassifyConfig(inputs=(str(EXAMPLES),), output=str(out), backend="onnxruntime", progress=False))
    assert summary.classified == 40 and out.is_file() and not (tmp_path / "c.csv.partial").exists()


def test_a_run_begun_before_the_square_crop_rule_is_continued_with_a_warning(tmp_path, caplog):
    """Before 2026-11-29 a non-square cutout was squashed to the square; a catalog begun then and
    resumed now would mix the two crops for such inputs without a word. Its run continues (square
    cutouts read as they did), with a warning naming the output; a run begun under the rule does not warn."""
    import logging

    import numpy as np

    from engine.fingerprint import keep_fingerprint
    from galaxy.catalog.metadata import CROP_RULE, CROP_RULE_KEY

    now = {"weights": "w", "backend": "b", CROP_RULE_KEY: CROP_RULE}
    path = tmp_path / "fingerprint.json"
    path.write_text('{"weights": "w", "backend": "b"}')  # a journal's record from before the rule
    for _ in range(2):  # and every rerun after it: the mixing is recorded, not forgotten after one warning
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            keep_fingerprint(path, now, "old.csv")
        assert "old.csv was begun by a galaxy version before the square-crop rule" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        keep_fingerprint(tmp_path / "new.json", now, "new.csv")
        keep_fingerprint(tmp_path / "new.json", now, "new.csv")  # begun and continued under the rule
    assert "before 2026-11-29" not in caplog.text

    out = tmp_path / "c.csv"  # a finished catalog whose metadata records a fingerprint from before
    journal = Journal(out, ("elliptical", "spiral"), now)
    journal.add(["a"], ["a.jpeg"], np.full((1, 2), 0.5, np.float32))
    journal.finish({"run": '{"weights": "w", "backend": "b"}'})
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        continued = Journal(out, ("elliptical", "spiral"), now)
    assert continued.resumed == 1 and "c.csv was begun by a galaxy version before the square-crop rule" in caplog.text
    continued.finish({"run": json.dumps(now), "complete": "true"})  # the catalog it writes records the two crops
    from galaxy.catalog.metadata import CROP_RULE_MIXED
    from galaxy.catalog.written import read_catalog_metadata

    assert json.loads(read_catalog_metadata(out)["run"])[CROP_RULE_KEY] == CROP_RULE_MIXED
    inode = out.stat().st_ino  # a rerun with nothing new: the catalog says so already, and stays (review)
    Journal(out, ("elliptical", "spiral"), now).finish({"run": json.dumps(now), "complete": "true"})
    assert out.stat().st_ino == inode
    assert json.loads(read_catalog_metadata(out)["run"])[CROP_RULE_KEY] == CROP_RULE_MIXED


def test_a_run_records_the_crop_rule_it_read_with():
    from types import SimpleNamespace

    from galaxy.card import default_model_dir, load_card
    from galaxy.catalog.metadata import CROP_RULE, CROP_RULE_KEY, run_fingerprint

    card = load_card(default_model_dir())
    fingerprint = run_fingerprint(card, SimpleNamespace(name="onnxruntime", precision="fp32"),
                                  ClassifyConfig(inputs=(), output="c.csv"))
    assert fingerprint[CROP_RULE_KEY] == CROP_RULE


@pytest.mark.parametrize("cut, reason", [
    ("5877241", "1 fields, not 5"),  # a row cut after part of its id
    ('a9,a9.jpeg,0.068731,0.9', "do not sum to 1"),  # cut inside p_spiral: 0.9 would have been kept
    ('a9,a9.jpeg,0.068731,0.931269,"{}"', "its last line is cut short"),  # no line end: not written whole
])
def test_a_journal_chunk_changed_after_it_was_written_is_refused_naming_it(tmp_path, cut, reason):
    """A chunk damaged outside the run (a copied run folder, a network file system): a row cut after
    its id ended the rerun in an IndexError traceback; one cut inside p_spiral was trusted, and the
    catalog held p_elliptical + p_spiral = 0.97."""
    import numpy as np

    out = tmp_path / "c.csv"
    journal = _journal(out)
    journal.add(["a1", "a2"], ["a1.jpeg", "a2.jpeg"], np.array([[0.25, 0.75], [0.5, 0.5]], np.float32))
    journal.commit()
    journal.release()
    (chunk,) = (tmp_path / "c.csv.partial").glob("chunk-*.csv")
    chunk.write_text(chunk.read_text() + cut + ("\r\n" if "cut short" not in reason else ""))
    with pytest.raises(UsageError, match=rf"chunk-000000.csv, line 3, was changed after this run wrote it \(.*{reason}"):
        _journal(out)
    chunk.write_text("".join(chunk.read_text().splitlines(keepends=True)[:2]))  # what the message says to do...
    resumed = _journal(out)  # ...or deleting the file: the run goes on
    assert resumed.resumed == 2
    resumed.release()


def test_a_finished_csv_catalog_cut_inside_a_kept_column_is_refused(tmp_path):
    """Cut inside its last (kept) column, the row's probabilities are whole: the missing line end tells."""
    import numpy as np

    out = tmp_path / "c.csv"
    journal = _journal(out)
    journal.add(["a1"], ["a1.jpeg"], np.array([[0.25, 0.75]], np.float32), [{"objid": "587735344123"}])
    journal.finish({"run": '{"weights": "w", "backend": "b"}'})
    text = out.read_text()
    out.write_text(text[:text.rindex("123")])
    with pytest.raises(UsageError, match=r"c.csv, row 1, was changed after it was written \(its last line is cut short"):
        _journal(out)


def test_a_finished_csv_catalog_cut_short_is_refused_not_continued(tmp_path):
    import numpy as np

    out = tmp_path / "c.csv"
    journal = _journal(out)
    journal.add(["a1", "a2"], ["a1.jpeg", "a2.jpeg"], np.array([[0.25, 0.75], [0.999953, 0.000047]], np.float32))
    journal.finish({"run": '{"weights": "w", "backend": "b"}'})
    text = out.read_text()
    out.write_text(text[:text.rindex("0.000047") + 4])  # the last row ends "...,0.999953,0.00"
    with pytest.raises(UsageError, match=r"c.csv, row 2, was changed after it was written \(its last line is cut short"):
        _journal(out)


@pytest.mark.parametrize("damage,reason", [
    (lambda text: text[:text.rindex("a2.jpeg") - 2], r"row 2, .*its last line is cut short"),  # cut in its id
    (lambda text: text.replace("0.250000", "x"), r"row 1, .*could not convert string to float: 'x'"),
    (lambda text: text.replace("0.250000", ""), r"row 1, .*could not convert string to float: ''"),
])
def test_a_finished_catalog_cut_in_its_id_or_with_a_word_for_a_probability_is_refused(tmp_path, damage, reason):
    """float() of the cut row's missing cell (None), or of a word, ran before the checks: a traceback."""
    import numpy as np

    out = tmp_path / "c.csv"
    journal = _journal(out)
    journal.add(["a1", "a2"], ["a1.jpeg", "a2.jpeg"], np.array([[0.25, 0.75], [0.5, 0.5]], np.float32))
    journal.finish({"run": '{"weights": "w", "backend": "b"}'})
    out.write_text(damage(out.read_text()))
    with pytest.raises(UsageError, match=r"c.csv, " + reason):
        _journal(out)


def test_a_finished_parquet_catalog_with_a_null_id_or_probability_is_refused(tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    for column, reason in (("id", "it has no id"), ("p_spiral", "could not convert string to float: 'None'")):
        out = tmp_path / f"{column}.parquet"
        journal = _journal(out)
        journal.add(["a1", "a2"], ["a1.jpeg", "a2.jpeg"], np.array([[0.25, 0.75], [0.5, 0.5]], np.float32))
        journal.finish({"run": '{"weights": "w", "backend": "b"}'})
        table = pq.read_table(out)
        values = table.column(column).to_pylist()
        values[1] = None
        pq.write_table(table.set_column(table.schema.get_field_index(column), column,
                                        pa.array(values, table.schema.field(column).type)), out)
        with pytest.raises(UsageError, match=rf"{column}.parquet, row 2, was changed after it was written \({reason}"):
            _journal(out)


def test_a_folder_where_the_errors_file_goes_is_refused_before_any_work(tmp_path):
    """It was found only after the catalog was written ("c.csv.errors.tmp: Is a directory", exit 1,
    the journal and a stray temporary file left behind)."""
    from galaxy.catalog.write import require_writable

    (tmp_path / "c.csv.errors.csv").mkdir()
    with pytest.raises(UsageError, match=r"c.csv.errors.csv is a folder, where .*c.csv writes its errors file"):
        require_writable(tmp_path / "c.csv")
    (tmp_path / "d.csv.meta.json").mkdir()
    with pytest.raises(UsageError, match=r"d.csv.meta.json is a folder, where .*d.csv writes its metadata"):
        require_writable(tmp_path / "d.csv")
    require_writable(tmp_path / "e.csv")


def test_a_folder_where_a_csv_named_otherwise_writes_its_metadata_is_refused_and_a_refused_rename_tidies_up(
        tmp_path):
    """With --format csv and a name not ending in .csv (r.dat), a folder at r.dat.meta.json was found only
    after every input was classified: exit 1 naming the hidden .r.dat.assembling.dat.meta.json, which was left
    behind with r.dat.errors.tmp (the renames were outside the clean-up)."""
    import numpy as np

    from galaxy.catalog.write import require_writable

    out = tmp_path / "r.dat"
    (tmp_path / "r.dat.meta.json").mkdir()
    with pytest.raises(UsageError, match=r"r.dat.meta.json is a folder, where .*r.dat writes its metadata"):
        require_writable(out, fmt="csv")
    journal = _journal(out, fmt="csv")  # the folder made after the check: the rename into place is refused
    journal.add(["a"], ["a.jpeg"], np.full((1, 2), 0.5, np.float32))
    with pytest.raises(IsADirectoryError) as caught:
        journal.finish({"run": '{"weights": "w", "backend": "b"}'})
    assert caught.value.filename == str(tmp_path / "r.dat.meta.json")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert [name for name in left if name.startswith(".") or name.endswith(".tmp")] == [], left
    assert list((tmp_path / "r.dat.partial").glob("chunk-*.csv"))  # the rows stay for a rerun


def test_non_finite_outputs_are_never_committed(tmp_path, model_copy):
    """A model with NaN weights had its NaN rows committed (and the next rerun called them damaged)."""
    import numpy as np
    from click.testing import CliRunner
    from safetensors.numpy import load_file, save_file

    from galaxy.card import file_sha256
    from galaxy.cli import cli

    weights = model_copy / "model.safetensors"
    save_file({name: np.full_like(t, np.nan) if t.dtype.kind == "f" else t for name, t in load_file(weights).items()},
              weights)
    card = json.loads((model_copy / "card.json").read_text())
    card["weights"]["sha256"] = file_sha256(weights)
    (model_copy / "card.json").write_text(json.dumps(card))
    out = tmp_path / "c.csv"
    result = CliRunner().invoke(cli, ["classify", str(EXAMPLES), "-o", str(out), "-q", "--model", str(model_copy),
                                      "--backend", "torch"])
    assert result.exit_code == 1 and "the model's outputs are not finite for 32 of a batch of 32" in result.output
    assert not out.exists() and not list((tmp_path / "c.csv.partial").glob("chunk-*.csv"))


def test_a_refused_rerun_leaves_no_journal_folder_of_its_own(tmp_path):
    """A rerun refused before any work (other settings) left OUT.partial/ with its lock (and cwd, fingerprint)."""
    import numpy as np

    out = tmp_path / "c.csv"
    journal = _journal(out)
    journal.add(["a"], ["a.jpeg"], np.full((1, 2), 0.5, np.float32))
    journal.finish({"run": '{"weights": "w", "backend": "b"}'})
    with pytest.raises(UsageError, match="was written with other settings"):
        Journal(out, ("elliptical", "spiral"), {"weights": "other", "backend": "b"})
    assert not (tmp_path / "c.csv.partial").exists() and out.exists()
    killed = _journal(tmp_path / "d.csv")  # a journal a run left (killed) is kept when a rerun is refused
    killed.add(["a"], ["a.jpeg"], np.full((1, 2), 0.5, np.float32))
    killed.commit()
    killed.release()
    with pytest.raises(UsageError, match="was started with other settings"):
        Journal(tmp_path / "d.csv", ("elliptical", "spiral"), {"weights": "other", "backend": "b"})
    assert list((tmp_path / "d.csv.partial").glob("chunk-*.csv"))


def test_a_failure_while_assembling_names_the_catalog_and_not_its_hidden_work_file(tmp_path, monkeypatch):
    """A permission error while the catalog was assembled named `.c.csv.assembling.csv`, a file the user never
    made and cannot find afterwards."""
    import errno

    out = tmp_path / "c.csv"

    def refused(self, tmp_out, metadata, errors):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_out))

    monkeypatch.setattr(Journal, "_assemble", refused)
    with pytest.raises(PermissionError) as caught:
        classify(ClassifyConfig(inputs=(str(EXAMPLES),), output=str(out), backend="onnxruntime", progress=False))
    assert caught.value.filename == str(out)


def test_a_catalog_row_naming_a_done_file_is_done_only_if_it_is_that_row(tmp_path, monkeypatch):
    """Rerun with rows B, A of one file F (A done before) and C: B took A's place by path (never
    classified) and A was written a second time as A#2; the summary counted it as resumed (review)."""
    sample = sorted(EXAMPLES.glob("*.jpeg"))[:2]
    monkeypatch.chdir(tmp_path)
    catalog = tmp_path / "rows.csv"
    catalog.write_text(f"objid,file,note\nA,{sample[0]},first\n")

    def run():
        config = ClassifyConfig(inputs=(), catalog=str(catalog), output=str(tmp_path / "out.csv"),
                                keep_columns=("note",), backend="onnxruntime", progress=False)
        return classify(config)

    run()
    catalog.write_text(f"objid,file,note\nB,{sample[0]},second\nA,{sample[0]},first\nC,{sample[1]},third\n")
    run()
    with open(tmp_path / "out.csv", newline="") as fh:
        rows = {row["id"]: row["note"] for row in csv.DictReader(fh)}
    assert rows == {"A": "first", "B": "second", "C": "third"}
    # a file listed twice under one id is still done twice (its second row is A#2)
    import numpy as np

    out = tmp_path / "twice.csv"
    journal = _journal(out)
    journal.add([journal.take_id("A"), journal.take_id("A")], ["f.jpeg", "f.jpeg"], np.full((2, 2), 0.5, np.float32))
    journal.release()
    rerun = _journal(out)
    assert rerun.is_done("f.jpeg", "A") and rerun.is_done("f.jpeg", "A") and not rerun.is_done("f.jpeg", "A")
    rerun.release()


def test_an_interrupt_just_after_a_chunk_is_written_writes_no_row_twice(tmp_path, monkeypatch):
    """A signal between a chunk's rename and the staged rows' release left them staged: `finish`
    wrote them into the next chunk too, and the catalog held them twice for good (review)."""
    import numpy as np

    out = tmp_path / "c.csv"
    journal = _journal(out, commit_rows=2)
    real = Journal._write_chunk
    calls = []

    def interrupted_after(self, rows):
        real(self, rows)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Journal, "_write_chunk", interrupted_after)
    with pytest.raises(KeyboardInterrupt):
        for name in "abcdef":
            journal.add([name], [f"{name}.jpeg"], np.full((1, 2), 0.5, np.float32))
    monkeypatch.setattr(Journal, "_write_chunk", real)
    assert journal.finish({}) == 4
    with open(out, newline="") as fh:
        assert [row["id"] for row in csv.DictReader(fh)] == ["a", "b", "c", "d"]


def test_the_quiet_failure_line_of_a_rerun_counts_every_input(tmp_path):
    """`-q` said "failed 1 of 41" and then, on the rerun, "failed 1 of 1" (review)."""
    from click.testing import CliRunner

    from galaxy.cli import cli

    folder = survey(tmp_path, 1)
    command = ["classify", str(folder), "-o", str(tmp_path / "out.csv"), "-q", "--backend", "onnxruntime"]
    lines = [CliRunner().invoke(cli, command).output.splitlines()[0] for _ in range(2)]
    assert lines[0].startswith("failed 1 of 41;") and lines[1].startswith("failed 1 of 41;"), lines


@pytest.mark.parametrize("option,value", [("--commit-seconds", "nan"), ("--commit-seconds", "-1"),
                                          ("--commit-every", "0")])
def test_commit_options_that_would_turn_commits_off_are_refused(tmp_path, option, value):
    """nan turned the time-based commit off without a word; 0 and negative values were taken."""
    from click.testing import CliRunner

    from galaxy.cli import cli

    result = CliRunner().invoke(cli, ["classify", str(EXAMPLES), "-o", str(tmp_path / "o.csv"), option, value])
    assert result.exit_code == 2 and option in result.output


def test_a_rerun_with_another_int8_model_is_refused_as_other_settings(tmp_path, monkeypatch):
    """The int8 model is part of the backend: a rerun after another `galaxy quantize` had kept the earlier
    run's rows (one int8 model) beside new ones (another; up to 0.023 apart), the catalog naming only
    "onnxruntime-int8 int8" (review of the engine cache, session 40). A run journalled before the
    fingerprint held the int8 model goes on as before."""
    from engine.backends import onnxruntime_int8
    from galaxy.catalog.metadata import INT8_KEY

    out = tmp_path / "c.csv"
    config = ClassifyConfig(inputs=(str(EXAMPLES),), output=str(out), backend="onnxruntime-int8", progress=False)
    classify(config)
    assert INT8_KEY in json.loads(_catalog_run(out))
    classify(config)  # the same int8 model: nothing to do
    monkeypatch.setattr(onnxruntime_int8, "model_fingerprint", lambda path: "another int8 model")
    with pytest.raises(UsageError, match=r'was written with other settings .*int8 "[0-9a-f]{16,}\.\.\. then, '
                                         '"another int8 model" now'):
        classify(config)
    earlier = json.loads(_catalog_run(out))
    del earlier[INT8_KEY]
    from galaxy.catalog.metadata import as_recorded_now
    from engine.fingerprint import changed_settings

    now = {**earlier, INT8_KEY: "another int8 model"}
    assert changed_settings(earlier, now) is None and as_recorded_now(earlier, now)[INT8_KEY] == "another int8 model"
    assert "backend" in changed_settings(earlier, {**now, "backend": "onnxruntime fp32"})


def test_a_rerun_on_a_cpu_of_another_int8_arithmetic_is_refused_as_other_settings(tmp_path, monkeypatch):
    """One int8 model gives other outputs on a CPU whose uint8 x int8 sums saturate (AVX2) than with VNNI:
    since int8 is checked on both, a task resubmitted from one kind of node to the other went on with int8
    and mixed the two in one catalog (review, session 41). The arithmetic is part of the run fingerprint;
    a run journalled before it was goes on as before."""
    import dataclasses

    from engine.backends import onnxruntime_int8
    from engine.fingerprint import changed_settings
    from engine.machine import int8_arithmetic
    from galaxy.catalog.metadata import INT8_ARITHMETIC_KEY, as_recorded_now

    out = tmp_path / "c.csv"
    config = ClassifyConfig(inputs=(str(EXAMPLES),), output=str(out), backend="onnxruntime-int8", progress=False)
    classify(config)
    here = int8_arithmetic()
    assert json.loads(_catalog_run(out))[INT8_ARITHMETIC_KEY] == here
    other = "vnni" if here != "vnni" else "avx2"
    monkeypatch.setattr(onnxruntime_int8, "int8_arithmetic", lambda: other)
    with pytest.raises(UsageError, match=f'was written with other settings .*int8_arithmetic "{here}" then, '
                                         f'"{other}" now'):
        classify(config)
    earlier = json.loads(_catalog_run(out))
    del earlier[INT8_ARITHMETIC_KEY]
    now = {**earlier, INT8_ARITHMETIC_KEY: other}
    assert changed_settings(earlier, now) is None and as_recorded_now(earlier, now)[INT8_ARITHMETIC_KEY] == other
    fp32 = dataclasses.replace(config, output=str(tmp_path / "f.csv"), backend="onnxruntime")
    assert INT8_ARITHMETIC_KEY not in json.loads(_catalog_run(classify(fp32).output))  # recorded for int8 alone


def _catalog_run(path) -> str:
    from galaxy.catalog.written import read_catalog_metadata

    return read_catalog_metadata(path)["run"]


def test_a_resume_stops_resolving_paths_once_every_done_row_is_matched(tmp_path, monkeypatch):
    """`is_done` asked `if not self.done` of a Counter of zeros (truthy), so every new input of a resume
    had its real path resolved (~30 us a symlink: 4 s of a 144,000-row resume); scale review, session 40."""
    import numpy as np

    import engine.journal_done as journal_done

    out = tmp_path / "c.csv"
    first = _journal(out)
    first.add(["a", "b"], ["a.jpeg", "b.jpeg"], np.full((2, 2), 0.5, np.float32))
    first.commit()
    first.release()
    again = _journal(out)
    resolved = []
    real = journal_done.path_key
    monkeypatch.setattr(journal_done, "path_key", lambda *a: resolved.append(a[0]) or real(*a))
    assert [again.is_done(p) for p in ("a.jpeg", "new1.jpeg", "b.jpeg", "new2.jpeg", "new3.jpeg")] == [
        True, False, True, False, False]
    assert resolved == ["a.jpeg", "new1.jpeg", "b.jpeg"]  # none after the last done row was matched
    again.release()


def test_a_finished_catalog_is_imported_row_by_row_into_one_chunk_before_the_first_new_one(tmp_path):
    """The import held a list of every row of OUT, then read the chunk whole (twice in memory): ~1.1 KB a
    row at a resume's peak (scale review, session 40). Now one chunk, written as the rows are read, when the
    rerun commits its first row (session 44: until then OUT holds them)."""
    import numpy as np

    out = tmp_path / "c.csv"
    first = _journal(out)
    first.add([f"g{k}" for k in range(100)], [f"g{k}.jpeg" for k in range(100)], np.full((100, 2), 0.5, np.float32))
    first.finish({"run": '{"weights": "w", "backend": "b"}'})
    again = _journal(out)
    assert again.resumed == 100 and not list(again.dir.glob("chunk-*.csv"))
    assert [row[0] for row in again.rows()] == [f"g{k}" for k in range(100)]
    again.add(["new"], ["new.jpeg"], np.full((1, 2), 0.5, np.float32))
    again.commit()
    chunks = sorted(again.dir.glob("chunk-*.csv"))
    assert [len(c.read_text().splitlines()) for c in chunks] == [100, 1]
    assert [row[0] for row in again.rows()] == [f"g{k}" for k in range(100)] + ["new"]
    again.release()
    killed = _journal(out)  # a rerun of the run killed after that commit: every row, from the journal
    assert killed.resumed == 101
    killed.release()


@pytest.mark.parametrize("fmt", ["csv", "fits", "parquet"])
def test_a_rerun_with_nothing_new_leaves_the_finished_catalog_as_it_is(tmp_path, fmt):
    """A rerun of a finished run rewrote the whole catalog (and first copied it into the journal) when it
    had classified nothing: ~90 of the ~140 s of a rerun of a million-row catalog on a 2-core Zen 3
    (session 44). Now the catalog and its metadata stay (the run that made its rows); the errors file is
    this run's; a run killed before it commits a row leaves no chunk, and its rerun reads OUT again."""
    import numpy as np

    from galaxy.catalog.written import read_catalog_metadata
    from galaxy.catalog.write import errors_path

    out = tmp_path / f"c.{fmt}"
    first = _journal(out)
    first.add([f"g{k}" for k in range(50)], [f"g{k}.jpeg" for k in range(50)], np.full((50, 2), 0.5, np.float32))
    first.errors.append(("bad", "bad.jpeg", "decode", "not an image"))
    first.finish({"run": '{"weights": "w", "backend": "b"}', "complete": "true", "date": "then"})
    written, stat = out.read_bytes(), out.stat()
    killed = _journal(out)
    killed.release()  # killed before committing a row
    rerun = _journal(out)
    assert rerun.resumed == 50 and not list(rerun.dir.glob("chunk-*.csv"))
    rerun.errors.append(("bad", "bad.jpeg", "decode", "still not an image"))
    assert rerun.finish({"run": '{"weights": "w", "backend": "b"}', "complete": "true", "date": "now"}) == 50
    assert out.read_bytes() == written and out.stat().st_ino == stat.st_ino and not rerun.dir.exists()
    assert read_catalog_metadata(out)["date"] == "then"
    assert "still not an image" in errors_path(out).read_text()
    fixed = _journal(out)  # the failed file classified now: the catalog is written again, with its row
    fixed.add(["bad"], ["bad.jpeg"], np.full((1, 2), 0.5, np.float32))
    assert fixed.finish({"run": '{"weights": "w", "backend": "b"}', "complete": "true", "date": "now"}) == 51
    assert read_catalog_metadata(out)["date"] == "now" and "not an image" not in errors_path(out).read_text()


def test_a_rerun_with_nothing_new_needs_the_catalogs_own_record_and_keeps_its_rows_if_it_is_deleted(tmp_path, caplog):
    """A CSV catalog whose metadata file was lost while a killed rerun's journal stood (its fingerprint
    standing in) was left without one, and the next rerun refused it: it is written again. A catalog
    deleted while a rerun works loses its rows (they were read from it), with a warning; this run's
    rows are kept (review, session 44)."""
    import numpy as np

    from galaxy.catalog.written import read_catalog_metadata
    from galaxy.catalog.formats import sidecar_path

    out = tmp_path / "c.csv"
    first = _journal(out)
    first.add(["a", "b"], ["a.jpeg", "b.jpeg"], np.full((2, 2), 0.5, np.float32))
    first.finish({"run": '{"weights": "w", "backend": "b"}', "complete": "true"})
    _journal(out).release()  # killed before a row of its own: its fingerprint stays in OUT.partial/
    sidecar_path(out).unlink()
    rerun = _journal(out)
    assert rerun.finish({"run": '{"weights": "w", "backend": "b"}', "complete": "true"}) == 2
    assert "run" in read_catalog_metadata(out)
    rerun = _journal(out)
    out.unlink()
    rerun.add(["c"], ["c.jpeg"], np.full((1, 2), 0.5, np.float32))
    rerun.commit()
    assert "was removed while this run worked" in caplog.text
    assert rerun.finish({"run": '{"weights": "w", "backend": "b"}', "complete": "true"}) == 1


def test_a_rerun_with_nothing_new_completes_an_interrupted_catalog(tmp_path):
    """An interrupted run's catalog says so ("complete": "false"); a rerun that finds nothing left to
    classify writes it again, saying it is complete."""
    import numpy as np

    from galaxy.catalog.written import read_catalog_metadata

    out = tmp_path / "c.csv"
    first = _journal(out)
    first.add(["g"], ["g.jpeg"], np.full((1, 2), 0.5, np.float32))
    first.finish({"run": '{"weights": "w", "backend": "b"}', "complete": "false"})
    rerun = _journal(out)
    assert rerun.finish({"run": '{"weights": "w", "backend": "b"}', "complete": "true"}) == 1
    assert read_catalog_metadata(out)["complete"] == "true"


def test_a_journals_path_keys_are_the_real_paths_with_each_folder_resolved_once(tmp_path):
    """`real_path` looks each folder up once (a resume of millions had resolved every component of every
    done row twice); its keys must stay os.path.realpath's: links to folders and files, '..', missing files."""
    from engine.journal_rows import real_path

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f.jpeg").write_bytes(b"")
    os.symlink(tmp_path / "a", tmp_path / "link")
    os.symlink(tmp_path / "a" / "b" / "f.jpeg", tmp_path / "a" / "fl.jpeg")
    os.symlink("b", tmp_path / "a" / "bl")
    folders = {}
    for base in (str(tmp_path), str(tmp_path / "link"), "/"):
        for name in ("a/b/f.jpeg", "link/b/f.jpeg", "link/bl/f.jpeg", "a/fl.jpeg", "link/fl.jpeg", "a/b/../b/f.jpeg",
                     "link/../a/b/f.jpeg", "./a//b/f.jpeg", "missing/x.jpeg", "a/b/.", "a/..", "f.jpeg", ""):
            path = os.path.join(base, name)
            assert real_path(path, folders) == os.path.realpath(path), path
    assert str(tmp_path / "link" / "bl") in folders  # looked up once, then answered from here
