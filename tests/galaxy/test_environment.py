"""The machine around a run: file systems without locks, odd cache variables, broken weights files."""

import fcntl
import json
import logging
import shutil

import pytest

from galaxy.errors import ModelError, UsageError


def test_a_file_system_without_locks_is_said_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    """Lustre without flock, NFS mounted nolock: flock fails with ENOSYS/ENOLCK, and every classify,
    train and --ray run ended in an OSError traceback."""
    import errno

    from galaxy.files import hold_lock

    def no_locks(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING):
        lock = hold_lock(tmp_path / "lock", "another run")
    lock.close()
    assert "cannot lock" in caplog.text and "the file system has no locks" in caplog.text


def test_the_cache_folder_follows_the_xdg_rules_and_says_when_there_is_none(monkeypatch, tmp_path):
    """An empty XDG_CACHE_HOME put the cache in the working folder (27 MB into the package's own); no HOME and
    no password entry ended in a RuntimeError traceback."""
    from pathlib import Path

    from galaxy.config import cache_dir

    monkeypatch.delenv("GALAXY_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    for xdg in ("", "relative/cache"):
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
        assert cache_dir() == tmp_path / ".cache" / "galaxy"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "galaxy"
    monkeypatch.delenv("XDG_CACHE_HOME")

    def homeless(cls=None):
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", classmethod(homeless))
    with pytest.raises(UsageError, match="set GALAXY_CACHE"):
        cache_dir()
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


def test_weights_that_are_not_safetensors_are_a_model_error_naming_the_file(tmp_path, default_model):
    """Random bytes under the card's (updated) sha256 raised safetensors' 'header too large', naming nothing."""
    import hashlib

    from galaxy.training.model import load_network

    model = tmp_path / "m"
    shutil.copytree(default_model[0], model)
    (model / "model.safetensors").write_bytes(b"\xff" * 4096)
    card = json.loads((model / "card.json").read_text())
    card["weights"]["sha256"] = hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    (model / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"model.safetensors: not readable safetensors weights"):
        load_network(model)
