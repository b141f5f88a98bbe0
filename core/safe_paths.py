"""One containment rule for every file or folder the pack opens, and bounded listings.

A name is relative, '/'-separated, without '..', and its real path (symlinks resolved) lies inside the
real path of one of the folder's roots. The check runs on the name and on realpath() before anything
is opened, and a refusal says nothing about the file system outside the roots.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import UnsafeNameError

log = logging.getLogger(__name__)

MAX_LIST_DEPTH = 8
MAX_LIST_ENTRIES = 20_000


def name_parts(name: object, what: str) -> tuple[str, ...]:
    """Parts of a relative '/'-separated name; UnsafeNameError for absolute, '..', empty or control characters."""
    if not isinstance(name, str) or not name.strip():
        raise UnsafeNameError(f"{what} name is empty; pick one from the list.")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UnsafeNameError(f"{what} name {name!r} contains control characters; pick one from the list.")
    text = name.replace("\\", "/")
    path = PurePosixPath(text)
    if path.is_absolute() or (len(text) > 1 and text[1] == ":"):
        raise UnsafeNameError(f"{what} name {name!r} is an absolute path; names are relative to the folder "
                              "they are listed from. Pick one from the list.")
    parts = tuple(p for p in path.parts if p not in ("", "."))
    if ".." in parts:
        raise UnsafeNameError(f"{what} name {name!r} contains '..'; names must stay inside the folder they are "
                              "listed from. Pick one from the list.")
    if not parts:
        raise UnsafeNameError(f"{what} name {name!r} names no file; pick one from the list.")
    return parts


def is_inside(path: str, root: str) -> bool:
    """True when the real path `path` is `root` or below it (both already realpath()-ed)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class Folder:
    """A named folder of the pack's inputs or outputs: its roots, in order of precedence."""

    label: str  # shown in errors, e.g. "models/reward_models"
    roots: tuple[str, ...]

    def real_roots(self) -> list[str]:
        return [os.path.realpath(r) for r in self.roots]

    def locate(self, name: str, what: str, kind: str = "file") -> Path:
        """Real path of `name` inside one root, as a file or a dir ('any': either); UnsafeNameError otherwise."""
        parts = name_parts(name, what)
        escaped = False
        for root in self.roots:
            real_root = os.path.realpath(root)
            real = os.path.realpath(os.path.join(real_root, *parts))
            if not is_inside(real, real_root):
                escaped = True  # a symlink inside the folder leads out: never opened
                continue
            if (kind in ("file", "any") and os.path.isfile(real)) or (kind in ("dir", "any") and os.path.isdir(real)):
                return Path(real)
        if escaped:
            raise UnsafeNameError(
                f"{what} {name!r} is a link that leads outside {self.label}; the pack opens only files inside "
                f"its folders. Move the file into {self.label}, or add its folder to extra_model_paths.yaml."
            )
        noun = "folder" if kind == "dir" else "file"
        raise UnsafeNameError(f"{what} {name!r} is not a {noun} in {self.label}; put it there, refresh "
                              "(press R in ComfyUI) and pick it from the list.")

    def child(self, name: str, what: str) -> Path:
        """Path of `name` (possibly not existing yet) directly under the first root; for outputs."""
        parts = name_parts(name, what)
        real_root = os.path.realpath(self.roots[0])
        target = os.path.realpath(os.path.join(real_root, *parts))
        if not is_inside(target, real_root) or target == real_root:
            raise UnsafeNameError(f"{what} {name!r} would leave {self.label}; use a plain name inside it.")
        return Path(target)


def walk_files(root: str | Path, suffixes: tuple[str, ...] = (), max_depth: int = MAX_LIST_DEPTH,
               max_entries: int = MAX_LIST_ENTRIES, want_dir=None) -> tuple[list[str], list[str]]:
    """(files, marked dirs) under root as '/'-separated relative names, bounded in depth and entries.

    Symlinks are followed only while their target stays inside root, and every real folder is
    visited once, so link loops end. want_dir(real folder path, file names) -> True lists the folder
    itself (e.g. a model directory) instead of its files. Hidden entries are skipped.
    """
    real_root = os.path.realpath(root)
    files: list[str] = []
    dirs: list[str] = []
    if not os.path.isdir(real_root):
        return files, dirs
    seen = {real_root}
    stack = [(real_root, ())]
    scanned = 0
    while stack:
        folder, rel = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        names = [e.name for e in entries]
        if rel and want_dir is not None and want_dir(folder, names):
            dirs.append("/".join(rel))
            continue
        for entry in entries:
            scanned += 1
            if scanned > max_entries:
                log.warning("listing of %s stopped after %d entries; move unrelated files elsewhere", root, max_entries)
                return sorted(files), sorted(dirs)
            if entry.name.startswith("."):
                continue
            real = os.path.realpath(entry.path)
            if not is_inside(real, real_root):
                continue
            if os.path.isdir(real):
                if real not in seen and len(rel) + 1 <= max_depth:
                    seen.add(real)
                    stack.append((real, (*rel, entry.name)))
            elif os.path.isfile(real) and (not suffixes or entry.name.lower().endswith(suffixes)):
                files.append("/".join((*rel, entry.name)))
    return sorted(files), sorted(dirs)
