"""The pack's error types: every bad input raises an AIGInputError whose message names the problem and the fix.

Messages are one readable paragraph for ComfyUI's error dialog: no terminal escape codes, no traceback.
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class AIGInputError(ValueError):
    """Base of the pack's errors: an input (value, file, name) that cannot be used; the message says why and how."""


class FileLoadError(AIGInputError):
    """A file that exists but does not hold what was expected (corrupt, truncated, wrong format or encoding)."""


class UnsafeNameError(AIGInputError):
    """A file or folder name that would resolve outside the folder it must come from."""


def plain_text(text: object, limit: int = 300) -> str:
    """text without escape codes and control characters, its first non-empty line, at most limit characters."""
    cleaned = _ANSI.sub("", str(text))
    lines = [line.strip() for line in cleaned.splitlines() if line.strip()]
    first = _CONTROL.sub("", lines[0]) if lines else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."
