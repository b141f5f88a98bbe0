"""ComfyUI's folders under the pack's one containment rule (core/safe_paths.py): what nodes list and open.

Every file a node opens comes from here: a model folder of folder_paths (loras, reward_models, ...),
the input folder (prompt lists) or a subfolder of the output folder (evaluation sets and reports).
"""

from __future__ import annotations

from pathlib import Path

import folder_paths

from ..core.safe_paths import Folder, walk_files


def model_folder(folder_name: str) -> Folder:
    """models/<folder_name> with every root folder_paths knows (extra_model_paths.yaml included)."""
    return Folder(f"models/{folder_name}", tuple(folder_paths.get_folder_paths(folder_name)))


def input_folder() -> Folder:
    return Folder("ComfyUI's input folder", (folder_paths.get_input_directory(),))


def output_folder(subfolder: str) -> Folder:
    """<output>/<subfolder>, e.g. output/aig_eval."""
    return Folder(f"output/{subfolder}", (str(Path(folder_paths.get_output_directory()) / subfolder),))


def model_file(folder_name: str, name: str, what: str) -> Path:
    """Real path of a file listed in models/<folder_name>; UnsafeNameError when it is not inside."""
    return model_folder(folder_name).locate(name, what, kind="file")


def list_files(folder: Folder, suffixes: tuple[str, ...], want_dir=None) -> tuple[list[str], list[str]]:
    """(files, marked dirs) across the folder's roots, each name once, bounded (core.safe_paths.walk_files)."""
    files: set[str] = set()
    dirs: set[str] = set()
    for root in folder.roots:
        found_files, found_dirs = walk_files(root, suffixes, want_dir=want_dir)
        files.update(found_files)
        dirs.update(found_dirs)
    return sorted(files), sorted(dirs)
