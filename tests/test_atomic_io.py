"""atomic_io: temporaries carry their owner; those of dead processes are removed, live ones kept."""

import logging
import os
import subprocess
import sys

from hf_diffusionblocks import atomic_io
import pytest

from hf_diffusionblocks.atomic_io import (
    atomic_folder,
    atomic_save_folder,
    atomic_write_json,
    atomic_write_text,
    owner_tag,
    remove_stale_temporaries,
    remove_stale_temporaries_below,
)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporaries_of_dead_processes_are_removed_live_and_foreign_ones_kept(tmp_path, caplog):
    host = atomic_io._host()
    dead = tmp_path / f".saving.owner-{host}-{dead_pid()}.abc.tmp"
    dead.mkdir()
    (dead / "config.json").write_text("{")                       # a half-written file inside
    dead_file = tmp_path / f".block_0.safetensors.owner-{host}-{dead_pid()}.x.tmp"
    dead_file.write_bytes(b"half")
    live = tmp_path / f".saving{owner_tag()}def.tmp"             # this very process: still writing
    live.mkdir()
    foreign = tmp_path / f".saving.owner-otherhost-{dead_pid()}.ghi.tmp"
    foreign.mkdir()
    kept = tmp_path / "block_1.safetensors"
    kept.write_bytes(b"done")

    with caplog.at_level(logging.INFO, logger=atomic_io.__name__):
        removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([str(dead), str(dead_file)])
    assert live.exists() and foreign.exists() and kept.exists()
    assert "killed while writing" in caplog.text and "left by host otherhost" in caplog.text


def test_cleanup_reaches_subfolders_and_atomic_save_folder_cleans_its_folder(tmp_path):
    host = atomic_io._host()
    nested = tmp_path / "transformer" / f".config.json.owner-{host}-{dead_pid()}.y.tmp"
    nested.parent.mkdir()
    nested.write_text("{")
    assert remove_stale_temporaries_below(tmp_path) == [str(nested)]

    stale = tmp_path / f".saving.owner-{host}-{dead_pid()}.z.tmp"
    stale.mkdir()
    atomic_save_folder(tmp_path, lambda staging: atomic_write_json(os.path.join(staging, "a.json"), {"a": 1}))
    assert sorted(os.listdir(tmp_path)) == ["a.json", "transformer"]


def test_atomic_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as staging:
            open(os.path.join(staging, "a.txt"), "w").close()
            raise RuntimeError("killed mid-write")
    assert not target.exists() and os.listdir(tmp_path) == []  # nor a staging folder left
    with atomic_folder(target) as staging:
        assert not target.exists()
        atomic_write_text(os.path.join(staging, "a.txt"), "complete")
    assert (target / "a.txt").read_text() == "complete" and os.listdir(tmp_path) == ["out"]


def test_atomic_folder_replaces_only_what_it_may(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    with atomic_folder(target) as staging:  # an empty folder may be replaced
        atomic_write_text(os.path.join(staging, "first.txt"), "1")
    with pytest.raises(OSError):
        with atomic_folder(target) as staging:  # a non-empty one only with overwrite=True
            atomic_write_text(os.path.join(staging, "second.txt"), "2")
    assert sorted(os.listdir(target)) == ["first.txt"]
    with atomic_folder(target, overwrite=True) as staging:
        atomic_write_text(os.path.join(staging, "second.txt"), "2")
    assert sorted(os.listdir(target)) == ["second.txt"] and os.listdir(tmp_path) == ["out"]
