"""The containment rule (core/safe_paths.py): names stay inside their folder, refusals reveal nothing
outside, listings end on link loops and are bounded. An audit hook records every file and folder opened."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import pytest

from comfy_aig.core.errors import AIGInputError, UnsafeNameError
from comfy_aig.core.safe_paths import Folder, name_parts, walk_files

_OPENED: list[str] | None = None


def _audit(event, args):
    if _OPENED is not None and event in ("open", "os.scandir", "os.listdir") and args and args[0] is not None:
        _OPENED.append(os.fsdecode(args[0]) if isinstance(args[0], (str, bytes)) else str(args[0]))


sys.addaudithook(_audit)


@contextmanager
def opened_paths():
    """Paths opened (files) or listed (folders) inside the block."""
    global _OPENED
    _OPENED = []
    try:
        yield _OPENED
    finally:
        _OPENED = None


@pytest.fixture
def world(tmp_path):
    """root/ with a file, a subfolder and links; outside/ beside it with a secret and a model-like folder."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    (outside / "model").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    (outside / "secret.txt").write_text("s")
    (outside / "model" / "config.json").write_text("{}")
    (root / "link_out.txt").symlink_to(outside / "secret.txt")
    (root / "dir_out").symlink_to(outside / "model", target_is_directory=True)
    (root / "link_in.txt").symlink_to(root / "sub" / "b.txt")
    return Folder("models/test", (str(root),)), root, outside


@pytest.mark.parametrize("name", ["../outside/secret.txt", "sub/../../outside/secret.txt", "/etc/passwd",
                                  "..\\outside\\secret.txt", "C:\\Windows\\win.ini", "", "   ", "a\x00.txt",
                                  "a\n.txt", ".", "./"])
def test_bad_names_are_refused_by_their_text(name):
    with pytest.raises(UnsafeNameError):
        name_parts(name, "file")


def test_files_and_links_inside_resolve(world):
    folder, root, _ = world
    assert folder.locate("a.txt", "file") == (root / "a.txt").resolve()
    assert folder.locate("sub/b.txt", "file") == (root / "sub" / "b.txt").resolve()
    assert folder.locate("sub\\b.txt", "file") == (root / "sub" / "b.txt").resolve()
    assert folder.locate("link_in.txt", "file") == (root / "sub" / "b.txt").resolve()
    assert folder.locate("sub", "folder", kind="dir") == (root / "sub").resolve()


def test_links_leading_out_are_refused_before_anything_is_read(world):
    folder, _, outside = world
    with opened_paths() as seen:
        for name, kind in (("link_out.txt", "file"), ("dir_out", "dir"), ("dir_out/config.json", "file")):
            with pytest.raises(UnsafeNameError, match="leads outside models/test"):
                folder.locate(name, "file", kind=kind)
    assert not [p for p in seen if p.startswith(str(outside))]


def test_refusals_say_nothing_about_the_outside(world, tmp_path):
    folder, _, outside = world
    messages = []
    for name in ("../outside/secret.txt", "../outside/missing.txt", str(outside / "secret.txt"), "/nonexistent/x"):
        with opened_paths() as seen, pytest.raises(UnsafeNameError) as error:
            folder.locate(name, "file")
        assert not [p for p in seen if not p.startswith(str(tmp_path / "root"))]
        messages.append(str(error.value).replace(name, "NAME"))
        assert str(tmp_path) not in str(error.value).replace(name, "")
    assert messages[0] == messages[1]  # an existing and a missing outside file: the same words
    assert messages[2] == messages[3]


def test_missing_inside_says_where_to_put_it(world):
    folder, _, _ = world
    with pytest.raises(UnsafeNameError, match="is not a file in models/test; put it there"):
        folder.locate("nope.txt", "file")
    with pytest.raises(UnsafeNameError, match="is not a folder"):
        folder.locate("a.txt", "folder", kind="dir")
    assert issubclass(UnsafeNameError, AIGInputError)


def test_second_root_and_symlinked_root(tmp_path):
    real = tmp_path / "real_loras"
    real.mkdir()
    (real / "x.safetensors").write_bytes(b"x")
    linked_root = tmp_path / "models_loras"
    linked_root.symlink_to(real, target_is_directory=True)  # models/loras -> /data/loras is fine
    other = tmp_path / "extra"
    other.mkdir()
    (other / "y.safetensors").write_bytes(b"y")
    folder = Folder("models/loras", (str(linked_root), str(other)))
    assert folder.locate("x.safetensors", "LoRA") == (real / "x.safetensors").resolve()
    assert folder.locate("y.safetensors", "LoRA") == (other / "y.safetensors").resolve()


def test_child_for_outputs(tmp_path):
    folder = Folder("output/aig_eval", (str(tmp_path / "aig_eval"),))
    assert folder.child("set1", "evaluation set") == (tmp_path / "aig_eval" / "set1").resolve()
    (tmp_path / "aig_eval").mkdir()
    (tmp_path / "aig_eval" / "escape").symlink_to(tmp_path, target_is_directory=True)
    for name in ("../x", "/tmp/x", "escape"):
        with pytest.raises(UnsafeNameError):
            folder.child(name, "evaluation set")


def test_listing_ends_on_link_loops_and_skips_links_out(world):
    _, root, outside = world
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "sub" / "loop2").symlink_to(root / "sub", target_is_directory=True)
    (root / "self").symlink_to(root / "self_b")
    (root / "self_b").symlink_to(root / "self")
    with opened_paths() as seen:
        files, dirs = walk_files(root, (".txt", ".json"))
    assert files == ["a.txt", "link_in.txt", "sub/b.txt"]
    assert dirs == []
    assert not [p for p in seen if p.startswith(str(outside))]


def test_listing_is_bounded_in_depth_and_count(tmp_path):
    deep = tmp_path / "root"
    folder = deep
    for i in range(12):
        folder = folder / f"d{i}"
    folder.mkdir(parents=True)
    (folder / "deep.txt").write_text("x")
    (deep / "top.txt").write_text("x")
    assert walk_files(deep, (".txt",), max_depth=8)[0] == ["top.txt"]
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(50):
        (wide / f"f{i:02d}.txt").write_text("x")
    assert len(walk_files(wide, (".txt",), max_entries=20)[0]) == 20


def test_listing_marks_model_directories(tmp_path):
    root = tmp_path / "root"
    (root / "PickScore").mkdir(parents=True)
    (root / "PickScore" / "config.json").write_text("{}")
    (root / "PickScore" / "model.safetensors").write_bytes(b"x")
    (root / "hps.pt").write_bytes(b"x")
    files, dirs = walk_files(root, (".pt", ".safetensors"), want_dir=lambda _f, names: "config.json" in names)
    assert files == ["hps.pt"] and dirs == ["PickScore"]
