"""Safe file reading (core/files.py): every bad file is a FileLoadError naming the file and what was expected,
in one plain line (no escape codes, no traceback text)."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from aig_testkit import bad_files
from comfy_aig.core import files
from comfy_aig.core.errors import AIGInputError, FileLoadError, plain_text


class Payload:
    """A pickle that would run code if unpickled without weights_only."""

    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.safetensors"
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(path))
    return path


def assert_plain(message: str, file_name: str):
    assert file_name in message
    assert "\x1b" not in message and "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize("keep", [0.0, 0.004, 0.5, 0.98])
def test_truncated_safetensors_names_the_file(good, tmp_path, keep):
    broken = bad_files.truncated(good, tmp_path / "lora_cut.safetensors", keep=keep)
    for read in (files.read_safetensors, files.safetensors_keys):
        with pytest.raises(FileLoadError) as error:
            read(broken, "a LoRA")
        assert_plain(str(error.value), "lora_cut.safetensors")
        assert "expected a LoRA" in str(error.value) and "truncated or corrupt" in str(error.value)


def test_good_files_round_trip(good, tmp_path):
    assert torch.equal(files.read_state_dict(good)[0]["w"], torch.arange(64, dtype=torch.float32))
    wrapped = bad_files.pickle_of(tmp_path / "hps.pt", {"state_dict": {"w": torch.ones(2)}})
    state, was_wrapped = files.read_state_dict(wrapped)
    assert was_wrapped and torch.equal(state["w"], torch.ones(2))
    sft = tmp_path / "x.sft"
    sft.write_bytes(good.read_bytes())
    assert set(files.read_state_dict(sft)[0]) == {"w"}


@pytest.mark.parametrize("obj, held", [(torch.zeros(3), "a Tensor"), ([torch.zeros(3)], "a list"),
                                       ({}, "an empty dict"), (7, "an int")])
def test_pickle_that_is_not_a_state_dict(tmp_path, obj, held):
    path = bad_files.pickle_of(tmp_path / "weird.pt", obj)
    with pytest.raises(FileLoadError, match=f"weird.pt holds {held}, but reward weights was expected"):
        files.read_state_dict(path, "reward weights")


def test_state_dict_with_a_non_tensor_entry(tmp_path):
    path = bad_files.pickle_of(tmp_path / "mixed.pt", {"a": torch.zeros(1), "epoch": 3})
    with pytest.raises(FileLoadError, match="entry 'epoch' is an int, not a tensor"):
        files.read_state_dict(path)


def test_code_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"w": Payload()}, str(path))
    with pytest.raises(FileLoadError) as error:
        files.read_state_dict(path)
    assert_plain(str(error.value), "evil.pt")
    assert "weights_only=True" in str(error.value)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_unknown_suffix(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x")
    with pytest.raises(FileLoadError, match="unsupported file type '.onnx'"):
        files.read_state_dict(path)


def test_bad_json_names_file_line_and_column(tmp_path):
    path = bad_files.text_file(tmp_path / "config.json", bad_files.NOT_JSON)
    with pytest.raises(FileLoadError, match=r"config.json is not valid JSON \(line 1, column \d+"):
        files.read_json(path, "a CLIP config")
    good = bad_files.text_file(tmp_path / "ok.json", b'{"model_type": "clip"}')
    assert files.read_json(good) == {"model_type": "clip"}
    array = bad_files.text_file(tmp_path / "list.json", b"[1, 2]")
    with pytest.raises(FileLoadError, match="holds a JSON list, but a CLIP config was expected"):
        files.read_json(array, "a CLIP config")


def test_text_that_is_not_utf8(tmp_path):
    path = bad_files.text_file(tmp_path / "prompts.txt", bad_files.NOT_UTF8)
    with pytest.raises(FileLoadError, match=r"prompts.txt is not UTF-8 text \(byte 3 is 0xe9\)"):
        files.read_text(path)
    bom = bad_files.text_file(tmp_path / "bom.txt", b"\xef\xbb\xbfhello")
    assert files.read_text(bom) == "hello"


def test_dtype_names():
    assert files.torch_dtype("bf16") is torch.bfloat16 and files.torch_dtype(torch.float16) is torch.float16
    with pytest.raises(AIGInputError, match="unknown dtype 'fp8'; use one of bf16, bfloat16"):
        files.torch_dtype("fp8")


def test_plain_text_strips_escape_codes_and_keeps_one_line():
    raw = "\x1b[1mWeights only load failed\x1b[0m.\nTraceback (most recent call last):\n  File x"
    assert plain_text(raw) == "Weights only load failed."
    assert plain_text("a" * 500, limit=20) == "a" * 17 + "..."


def test_atomic_write_replaces_the_file_and_cleans_up_a_failed_write(tmp_path):
    import re

    target = tmp_path / "sub" / "out.bin"
    files.atomic_write(target, lambda tmp: tmp.write_bytes(b"one"))
    files.atomic_write(target, lambda tmp: tmp.write_bytes(b"two"), fsync=True, mode=0o644)
    assert target.read_bytes() == b"two" and (target.stat().st_mode & 0o777) == 0o644

    def fail(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("simulated failure mid-write")

    with pytest.raises(RuntimeError, match="simulated"):
        files.atomic_write(target, fail)
    assert target.read_bytes() == b"two" and os.listdir(target.parent) == ["out.bin"]
    name = files.temp_path(target).name
    assert re.fullmatch(rf"\.out\.bin\.{files.host_name()}\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp", name)
