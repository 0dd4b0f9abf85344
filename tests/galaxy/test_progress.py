"""Progress: a bar on a terminal, plain periodic lines in logs, nothing with --quiet."""

import io

import pytest
from click.testing import CliRunner

from galaxy.cli import cli
from galaxy.progress import PlainProgress, progress
from tests.conftest import EXAMPLES


def test_plain_lines_when_not_a_terminal(monkeypatch):
    monkeypatch.setenv("GALAXY_PROGRESS_INTERVAL", "0")
    stream = io.StringIO()
    bar = progress("classifying", "img", total=200, stream=stream)
    assert isinstance(bar, PlainProgress)
    bar.update(50)
    bar.set_postfix_str("2 failed")
    bar.update(50)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("classifying: 50/200 img (25.0%), ") and "img/min" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("classifying: 100/200 img (50.0%)") and lines[-1].endswith("2 failed")
    assert "\r" not in stream.getvalue()


def test_quiet_writes_nothing():
    stream = io.StringIO()
    bar = progress("x", total=3, enabled=False, stream=stream)
    bar.update(3)
    bar.close()
    assert stream.getvalue() == ""


def test_classify_in_a_log_prints_progress_lines_and_quiet_silences_them(tmp_path, monkeypatch):
    monkeypatch.setenv("GALAXY_PROGRESS_INTERVAL", "0")
    files = [str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:4]]
    loud = CliRunner().invoke(cli, ["classify", *files, "-o", str(tmp_path / "a.csv"), "--backend", "onnxruntime"])
    assert loud.exit_code == 0 and "classifying: 4/4 img (100.0%)" in loud.output  # with its total
    quiet = CliRunner().invoke(cli, ["classify", *files, "-o", str(tmp_path / "b.csv"), "-q", "--backend", "onnxruntime"])
    assert quiet.exit_code == 0 and "classifying:" not in quiet.output


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_terminal_bar_has_a_total_an_eta_and_images_per_minute():
    stream = _Terminal()
    bar = progress("classifying", "img", stream=stream)  # the total is not known yet
    bar.update(20)
    bar.total = 200  # counting finished
    bar.update(30)
    bar.refresh()
    bar.close()
    last = stream.getvalue().split("\r")[-1]
    assert "50/200 img" in last and "25%" in last and "img/min" in last and "img/s" not in stream.getvalue()
    assert "<?" not in last  # an ETA, not '?'


@pytest.fixture
def bars(monkeypatch):
    """The progress bars classify makes, recorded (plain ones, written to a string)."""
    import engine.run

    made = []

    def recording_progress(*args, **kwargs):
        made.append(PlainProgress("classifying", "img", None, 3600, io.StringIO()))
        return made[-1]

    monkeypatch.setattr(engine.run, "progress", recording_progress)
    return made


def test_classify_gives_its_bar_the_total(tmp_path, bars):
    files = [str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:5]]
    result = CliRunner().invoke(cli, ["classify", *files, str(EXAMPLES), "-o", str(tmp_path / "a.csv"),
                                      "--backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    assert bars[0].total == 45 and bars[0].n == 45


def test_a_resume_after_inputs_were_removed_gives_its_bar_the_inputs_it_classifies(tmp_path, bars):
    """The total was the inputs less every done row, those of inputs no longer given too: 10/9 img (111.1%)."""
    files = [str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:5]]
    out = str(tmp_path / "a.csv")
    assert CliRunner().invoke(cli, ["classify", *files[:3], "-o", out, "--backend", "onnxruntime"]).exit_code == 0
    result = CliRunner().invoke(cli, ["classify", *files[1:], "-o", out, "--backend", "onnxruntime"])  # less 1, 2 new
    assert result.exit_code == 0, result.output
    assert bars[1].total == 2 and bars[1].n == 2


def test_quiet_classify_does_not_count_its_inputs(tmp_path, monkeypatch):
    """With no bar shown the count was wasted: a finished run's rerun waited up to a second for it."""
    import engine.run

    counted = []
    monkeypatch.setattr(engine.run, "_count_total", lambda *args: counted.append(args))
    files = [str(p) for p in sorted(EXAMPLES.glob("*.jpeg"))[:2]]
    out = str(tmp_path / "a.csv")
    assert CliRunner().invoke(cli, ["classify", *files, "-o", out, "-q", "--backend", "onnxruntime"]).exit_code == 0
    assert not counted
    assert CliRunner().invoke(cli, ["classify", *files, "-o", out, "--backend", "onnxruntime"]).exit_code == 0
    assert len(counted) == 1  # (the bar's total is counted where a bar is shown)
