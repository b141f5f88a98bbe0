"""Offline CLIP tokenisation from open_clip's bundled BPE vocabulary (no hub access).

``write_clip_tokenizer_files(directory)`` turns ``open_clip/bpe_simple_vocab_16e6.txt.gz`` into the
``vocab.json`` / ``merges.txt`` / ``tokenizer_config.json`` files of a transformers ``CLIPTokenizer``
(the same 49408-token vocabulary as openai/clip-vit-* and laion/CLIP-ViT-*: 256 byte symbols,
256 ``</w>`` symbols, 48894 merges, ``<|startoftext|>`` = 49406, ``<|endoftext|>`` = 49407).
``build_clip_tokenizer(directory=None)`` writes them (to a per-process temp dir by default) and
loads the tokenizer with ``local_files_only=True``. Also usable for the SD1.x / SDXL text encoders.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

NUM_MERGES = 49152 - 256 - 2  # merges kept by OpenAI CLIP / open_clip SimpleTokenizer
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
TOKENIZER_FILES = ("vocab.json", "merges.txt")


def open_clip_bpe_path() -> Path:
    """Path of open_clip's bundled BPE merges file (bpe_simple_vocab_16e6.txt.gz)."""
    from open_clip.tokenizer import default_bpe

    return Path(default_bpe())


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP reversible byte -> printable unicode table (Radford et al. 2019)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_vocab_and_merges(bpe_path: str | os.PathLike | None = None) -> tuple[dict[str, int], list[str]]:
    """(token -> id vocabulary, merge lines "a b") equal to open_clip's SimpleTokenizer encoder."""
    path = Path(bpe_path) if bpe_path is not None else open_clip_bpe_path()
    lines = gzip.open(path).read().decode("utf-8").split("\n")[1:NUM_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, [" ".join(m) for m in merges]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_clip_tokenizer_files(directory: str | os.PathLike, model_max_length: int = 77,
                               bpe_path: str | os.PathLike | None = None) -> Path:
    """Write vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json into directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges(bpe_path)
    _atomic_write(out / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    _atomic_write(out / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    _atomic_write(out / "special_tokens_map.json", json.dumps(specials))
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length, **specials}
    _atomic_write(out / "tokenizer_config.json", json.dumps(config))
    return out


@functools.lru_cache(maxsize=1)
def _default_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="comfy_aig_clip_tok_"))


@functools.lru_cache(maxsize=8)
def _load(directory: str, model_max_length: int):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(directory, local_files_only=True, model_max_length=model_max_length)


def build_clip_tokenizer(directory: str | os.PathLike | None = None, model_max_length: int = 77):
    """A transformers CLIPTokenizer built offline from open_clip's BPE (files cached in directory or a temp dir)."""
    target = Path(directory) if directory is not None else _default_dir()
    if not all((target / f).is_file() for f in TOKENIZER_FILES):
        write_clip_tokenizer_files(target, model_max_length)
        log.debug("wrote CLIP tokenizer files from open_clip BPE to %s", target)
    return _load(str(target), model_max_length)


def has_tokenizer_files(directory: str | os.PathLike) -> bool:
    """True when directory holds a transformers tokenizer (tokenizer.json or vocab.json + merges.txt)."""
    d = Path(directory)
    return (d / "tokenizer.json").is_file() or all((d / f).is_file() for f in TOKENIZER_FILES)


def load_directory_tokenizer(directory: str | os.PathLike, model_max_length: int = 77):
    """The tokenizer shipped in a model directory, loaded offline; falls back to open_clip's BPE when absent."""
    if has_tokenizer_files(directory):
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(str(directory), local_files_only=True, model_max_length=model_max_length)
    log.info("no tokenizer files in %s; using open_clip's bundled CLIP BPE vocabulary", directory)
    return build_clip_tokenizer(model_max_length=model_max_length)
