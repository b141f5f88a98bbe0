"""On-disk evaluation set: one atomically written safetensors record per queued run.

Layout: ``<root>/<set name>/run-<time_ns>-<random>.safetensors``, each holding ``features`` [B, D]
(float32), optional ``scores`` [B] and JSON metadata (label, prompts, seeds, batch indices, feature source).
A record is written to a hidden temp file in the same folder, fsynced and renamed with ``os.replace``,
so a crash mid-write leaves at most an ignored ``.tmp`` file (named for its host and process, and removed
the next time the set is opened once that process is gone) and every completed run stays readable.
Unique names make back-to-back (or concurrent) writers safe without locks.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from .errors import AIGInputError
from .files import atomic_write, read_text
from .files import host_name as _host  # the host part of temp names, parsed by _writer_is_gone

RECORD_GLOB = "run-*.safetensors"
METADATA_KEY = "aig_eval"
FORMAT_VERSION = 1
_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
STALE_TEMP_SECONDS = 24 * 3600  # a temp file of another host is removed only when this old


class EvalSetError(AIGInputError):
    """Bad evaluation-set name, record or file (the message names the problem and the fix)."""


def check_set_name(name: str) -> str:
    """A set name is one safe folder name: letters, digits, '_', '-', '.', starting with a letter or digit."""
    if not isinstance(name, str) or not _SET_NAME.fullmatch(name) or ".." in name:
        raise EvalSetError(
            f"evaluation set name {name!r} is not a plain folder name; use letters, digits, '_', '-' or '.' "
            "(no slashes, no leading dot), e.g. 'parti_sd15'."
        )
    return name


@dataclass
class EvalRecord:
    """One queued run: B rows of features with their prompt, seed and batch index, and optional rewards."""

    label: str
    features: np.ndarray  # [B, D] float32
    prompts: list[str]  # [B]
    seeds: list[int]  # [B]
    batch_indices: list[int]  # [B]
    scores: np.ndarray | None = None  # [B] float32
    feature_source: str = ""
    created: float = field(default_factory=time.time)
    name: str = ""  # file name once stored

    def __post_init__(self):
        self.features = np.asarray(self.features, dtype=np.float32)
        if self.features.ndim != 2 or self.features.shape[0] < 1:
            raise EvalSetError(f"record features must be [B, D] with B >= 1, got shape {self.features.shape}.")
        if not np.isfinite(self.features).all():
            raise EvalSetError("record features contain NaN or inf; fix the images/feature model before collecting.")
        b = self.features.shape[0]
        if not (len(self.prompts) == len(self.seeds) == len(self.batch_indices) == b):
            raise EvalSetError(f"record has {b} feature rows but {len(self.prompts)} prompts, {len(self.seeds)} "
                               f"seeds and {len(self.batch_indices)} batch indices; give one of each per row.")
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
            if self.scores.shape[0] != b:
                raise EvalSetError(f"record has {b} feature rows but {self.scores.shape[0]} scores.")
        if not isinstance(self.label, str) or not self.label.strip():
            raise EvalSetError("record label is empty; name the run, e.g. 'base' or 'aig:p=2'.")

    @classmethod
    def for_batch(cls, label, features, prompt: str, seed: int, scores=None, feature_source: str = ""):
        """Record of one ComfyUI run: a batch of B images sharing one prompt and seed (rows 0..B-1)."""
        b = int(np.asarray(features).shape[0]) if np.asarray(features).ndim == 2 else 0
        return cls(label=label, features=features, prompts=[prompt] * b, seeds=[int(seed)] * b,
                   batch_indices=list(range(b)), scores=scores, feature_source=feature_source)

    def keys(self) -> list[tuple[str, int, int]]:
        """(prompt, seed, batch index) per row: the pairing key between a run and its reference."""
        return list(zip(self.prompts, self.seeds, self.batch_indices))

    def to_bytes(self) -> bytes:
        tensors = {"features": self.features}
        if self.scores is not None:
            tensors["scores"] = self.scores
        meta = {"version": FORMAT_VERSION, "label": self.label, "prompts": self.prompts, "seeds": self.seeds,
                "batch_indices": self.batch_indices, "feature_source": self.feature_source, "created": self.created}
        return st_save(tensors, metadata={METADATA_KEY: json.dumps(meta)})

    @classmethod
    def from_file(cls, path: Path) -> EvalRecord:
        data = path.read_bytes()
        try:
            tensors = st_load(data)
            header_len = int.from_bytes(data[:8], "little")
            meta = json.loads(json.loads(data[8:8 + header_len])["__metadata__"][METADATA_KEY])
        except Exception as error:  # noqa: BLE001 - any parse failure is a corrupt record
            raise EvalSetError(f"evaluation record {path} is unreadable ({error}); move it away and re-run "
                               "that prompt.") from error
        return cls(label=meta["label"], features=tensors["features"], prompts=list(meta["prompts"]),
                   seeds=[int(s) for s in meta["seeds"]], batch_indices=[int(i) for i in meta["batch_indices"]],
                   scores=tensors.get("scores"), feature_source=meta.get("feature_source", ""),
                   created=float(meta.get("created", 0.0)), name=path.name)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write data by core.files.atomic_write (hidden .<name>.<host>.<pid>.<random>.tmp beside path), fsynced."""
    atomic_write(path, lambda tmp: _write_bytes(tmp, data), fsync=True)


def _write_bytes(tmp: Path, data: bytes) -> None:
    with open(tmp, "wb") as handle:  # module-level open: the crash tests replace it to kill a write half-way
        handle.write(data)


def _writer_is_gone(tmp: Path) -> bool:
    """True when the process that wrote this temp file cannot still be writing it."""
    match = re.fullmatch(r"\..+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp", tmp.name)
    try:
        age = time.time() - tmp.stat().st_mtime
    except OSError:
        return False
    if match is None or match["host"] != _host():
        return age > STALE_TEMP_SECONDS
    pid = int(match["pid"])
    if pid == os.getpid():
        return False  # this process finishes or removes its own writes
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists but belongs to someone else
        return False
    return age > STALE_TEMP_SECONDS


def remove_interrupted_writes(folder: Path) -> list[Path]:
    """Delete temp files left by writers that were killed mid-write; returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if _writer_is_gone(tmp):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@dataclass
class LabelData:
    """All rows collected under one run label, concatenated in collection order."""

    label: str
    features: np.ndarray  # [N, D]
    scores: np.ndarray | None  # [N], None when no record of the label had scores
    keys: list[tuple[str, int, int]]  # (prompt, seed, batch index) per row
    runs: int
    missing_scores: int  # rows collected without a score


class EvalSet:
    """A named evaluation set: a folder of per-run records under ``root``."""

    def __init__(self, root: Path | str, name: str):
        self.name = check_set_name(name)
        self.path = Path(root) / self.name
        if self.path.is_dir():
            remove_interrupted_writes(self.path)

    def append(self, record: EvalRecord) -> Path:
        """Store one run atomically under a unique name; returns the record's path."""
        self.path.mkdir(parents=True, exist_ok=True)
        name = f"run-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.safetensors"
        target = self.path / name
        atomic_write_bytes(target, record.to_bytes())
        record.name = name
        return target

    def record_paths(self) -> list[Path]:
        """Completed record files in collection order (temp files of interrupted writes are ignored)."""
        if not self.path.is_dir():
            return []
        return sorted(self.path.glob(RECORD_GLOB))

    def fingerprint(self) -> tuple[str, ...]:
        """Names of the completed records: changes whenever a run is added or removed."""
        return tuple(p.name for p in self.record_paths())

    def records(self) -> list[EvalRecord]:
        return [EvalRecord.from_file(p) for p in self.record_paths()]

    def by_label(self) -> dict[str, LabelData]:
        """Rows grouped by run label (first-seen order); raises if records mix feature sizes or sources."""
        records = self.records()
        _check_consistent(records, self.path)
        grouped: dict[str, list[EvalRecord]] = {}
        for record in records:
            grouped.setdefault(record.label, []).append(record)
        return {label: _merge(label, recs) for label, recs in grouped.items()}


def _check_consistent(records: list[EvalRecord], where: Path) -> None:
    dims = {r.features.shape[1] for r in records}
    sources = {r.feature_source for r in records}
    if len(dims) > 1 or len(sources) > 1:
        raise EvalSetError(
            f"evaluation set {where} mixes feature models (D in {sorted(dims)}, sources {sorted(sources)}); "
            "metrics need one feature model per set: collect into a new set name for another feature model."
        )


def _merge(label: str, records: list[EvalRecord]) -> LabelData:
    features = np.concatenate([r.features for r in records], axis=0)
    with_scores = [r for r in records if r.scores is not None]
    scores = np.concatenate([r.scores for r in with_scores]) if with_scores else None
    missing = sum(r.features.shape[0] for r in records if r.scores is None)
    keys = [key for r in records for key in r.keys()]
    return LabelData(label, features, scores, keys, len(records), missing)


PROMPT_LIST_SUFFIXES = (".txt", ".tsv")


def tsv_prompt_rows(text: str) -> list[dict[str, str]]:
    """Rows of a PartiPrompts-style .tsv with a non-empty 'Prompt' cell, as {lower-case header: stripped cell}."""
    lines = text.splitlines()
    header = [h.strip().lower() for h in lines[0].split("\t")] if lines else []
    if "prompt" not in header:
        raise EvalSetError("a .tsv prompt list needs a header row with a 'Prompt' column (PartiPrompts layout).")
    rows = [dict(zip(header, (cell.strip() for cell in line.split("\t")))) for line in lines[1:]]
    return [row for row in rows if row.get("prompt")]


def parse_prompt_list(text: str, tsv: bool = False) -> list[str]:
    """Prompts of a list file: one per line (blank and '#' lines skipped); a .tsv uses its 'Prompt' column."""
    if tsv:
        prompts = [row["prompt"] for row in tsv_prompt_rows(text)]
    else:
        prompts = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise EvalSetError("the prompt list is empty; write one prompt per line.")
    return prompts


def read_prompt_list(path: Path | str) -> list[str]:
    """Prompts of a .txt (one per line) or .tsv (column 'Prompt') file, UTF-8."""
    path = Path(path)
    if path.suffix.lower() not in PROMPT_LIST_SUFFIXES:
        raise EvalSetError(f"{path.name}: prompt lists must be .txt (one prompt per line) or .tsv files.")
    text = read_text(path, "a prompt list (one prompt per line, or a .tsv with a 'Prompt' column)")
    return parse_prompt_list(text, tsv=path.suffix.lower() == ".tsv")


def prompt_at(prompts: list[str], index: int) -> tuple[str, int, int]:
    """(prompt, line index, pass) for a run index: runs wrap around the list, pass counts the wraps."""
    if index < 0:
        raise EvalSetError(f"run index must be >= 0, got {index}.")
    return prompts[index % len(prompts)], index % len(prompts), index // len(prompts)
