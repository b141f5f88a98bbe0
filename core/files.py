"""Reading local files safely: every failure is a FileLoadError that names the file and what was expected.

Weights: safetensors first; ``.pt``/``.pth``/``.bin``/``.ckpt`` only through ``torch.load(weights_only=True)``.
Writing: ``atomic_write(path, write)`` is the one atomic file write (hidden temp file beside the target, then
``os.replace``), used by every writer of the pack (LoRA exports, PNGs, evaluation records, demo outputs).
"""

from __future__ import annotations

import json
import os
import re
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import AIGInputError, FileLoadError, plain_text

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")
TORCH_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
                "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def torch_dtype(name) -> torch.dtype:
    """The torch dtype of a name in TORCH_DTYPES (or a torch.dtype itself); AIGInputError listing the choices."""
    if isinstance(name, torch.dtype):
        return name
    if isinstance(name, str) and name in TORCH_DTYPES:
        return TORCH_DTYPES[name]
    raise AIGInputError(f"unknown dtype {name!r}; use one of {', '.join(sorted(TORCH_DTYPES))}.")


def read_safetensors(path: Path | str, what: str = "weights") -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file; FileLoadError naming the file when it is truncated or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise _unreadable_safetensors(path, error, what) from None


def safetensors_keys(path: Path | str, what: str = "weights") -> list[str]:
    """Tensor names of a .safetensors file from its header only; FileLoadError when the header is bad."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError, ValueError) as error:
        raise _unreadable_safetensors(path, error, what) from None


def _unreadable_safetensors(path: Path, error: Exception, what: str) -> FileLoadError:
    return FileLoadError(f"{path.name} is not a readable safetensors file ({plain_text(error, 120)}): expected "
                         f"{what}. The file is truncated or corrupt; download or export it again.")


def _torch_load(path: Path):
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - UnpicklingError, EOFError, RuntimeError...: all mean "not weights"
        raise FileLoadError(
            f"{path.name} was refused by torch.load(weights_only=True): it is not a plain weights file "
            f"({type(error).__name__}: {plain_text(error, 160)}). Only load files from sources you trust; "
            "convert them to .safetensors in a trusted environment."
        ) from None


def read_state_dict(path: Path | str, what: str = "a state dict of tensors") -> tuple[dict[str, torch.Tensor], bool]:
    """(tensors by name, was wrapped in {"state_dict": ...}) from safetensors or a weights-only pickle."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return read_safetensors(path, what), False
    if suffix not in PICKLE_SUFFIXES:
        raise FileLoadError(f"{path.name}: unsupported file type {path.suffix!r}; expected {what} in one of "
                            f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)}.")
    obj = _torch_load(path)
    wrapped = isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict)
    state = obj["state_dict"] if wrapped else obj
    if not isinstance(state, dict) or not state:
        held = "an empty dict" if isinstance(state, dict) else _a(type(state).__name__)
        raise FileLoadError(f"{path.name} holds {held}, but {what} was expected (a mapping of names to tensors, "
                            "optionally under 'state_dict').")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise FileLoadError(f"{path.name} is not {what}: entry {plain_text(bad[0], 80)!r} is "
                            f"{_a(type(state[bad[0]]).__name__)}, not a tensor.")
    return dict(state), wrapped


def read_json(path: Path | str, what: str = "a JSON object") -> dict:
    """The JSON object in a UTF-8 file; FileLoadError naming the file, line and column when it is not JSON."""
    path = Path(path)
    text = read_text(path, what)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise FileLoadError(f"{path.name} is not valid JSON (line {error.lineno}, column {error.colno}: "
                            f"{error.msg}): expected {what}.") from None
    if not isinstance(value, dict):
        raise FileLoadError(f"{path.name} holds a JSON {type(value).__name__}, but {what} was expected.")
    return value


def _a(noun: str) -> str:
    """'a list', 'an int'."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def read_text(path: Path | str, what: str = "UTF-8 text") -> str:
    """A UTF-8 text file (a leading BOM is dropped); FileLoadError naming the file and the first bad byte."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise FileLoadError(f"{path.name} is not UTF-8 text (byte {error.start} is 0x{data[error.start]:02x}): "
                            f"expected {what}. Save it as UTF-8 in your editor.") from None


def host_name() -> str:
    """This machine's name as it appears in temp file names (letters, digits and '-')."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def temp_path(path: Path | str) -> Path:
    """Hidden temp file beside path that names its writer: .<name>.<host>.<pid>.<random>.tmp"""
    path = Path(path)
    return path.with_name(f".{path.name}.{host_name()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write(path: Path | str, write: Callable[[Path], object], fsync: bool = False,
                 mode: int | None = None) -> Path:
    """write(tmp) on temp_path(path), then os.replace onto path; the temp file is removed if either fails.

    fsync: flush the file before the rename and the folder after it (the write survives a power loss).
    mode: permission bits set before the rename (e.g. 0o644 for files everyone must read, whatever the umask).
    Readers see the old file or the complete new one, never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if fsync:
        _fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path | str, text: str, mode: int | None = None) -> Path:
    """atomic_write of UTF-8 text."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), mode=mode)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
