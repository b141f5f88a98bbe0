"""Real-ComfyUI harness: a `main.py --cpu` subprocess on a free loopback port with this pack installed.

Used when COMFYUI_ROOT points at a ComfyUI checkout; tests skip with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

import comfy_aig

PACK_DIR = Path(comfy_aig.__file__).resolve().parent
PACK_NAME = "comfy_aig"
TEST_NODES_DIR = Path(__file__).resolve().parent / "comfy_test_nodes"  # test-only nodes (TestRandomConditioning)
TEST_NODES_NAME = "aig_test_nodes"


def comfyui_root() -> Path | None:
    """The ComfyUI checkout named by COMFYUI_ROOT, or None when unset."""
    value = os.environ.get("COMFYUI_ROOT", "").strip()
    if not value:
        return None
    root = Path(value).expanduser().resolve()
    if not (root / "main.py").is_file() or not (root / "comfy").is_dir():
        raise RuntimeError(f"COMFYUI_ROOT={value} is not a ComfyUI checkout (no main.py / comfy/ there)")
    return root


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyServer:
    """A ComfyUI server process with a temp base directory and this pack (+ the test-only nodes) in custom_nodes."""

    def __init__(self, root: Path, base_dir: Path, startup_timeout: float = 180.0):
        self.root = root
        self.base_dir = base_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base_dir / "comfyui.log"
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> ComfyServer:
        """Install the pack and the test nodes by symlink, start main.py and wait until /object_info answers."""
        custom_nodes = self.base_dir / "custom_nodes"
        custom_nodes.mkdir(parents=True, exist_ok=True)
        for name, target in ((PACK_NAME, PACK_DIR), (TEST_NODES_NAME, TEST_NODES_DIR)):
            link = custom_nodes / name
            if not link.exists():
                link.symlink_to(target, target_is_directory=True)
        command = [
            sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base_dir), "--disable-api-nodes", "--disable-auto-launch",
            "--database-url", "sqlite:///:memory:",
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode} during startup:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/object_info/AIGSchedulePreview", timeout=5).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {self.startup_timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server's whole process group by PID; wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        if getattr(self, "_log", None) is not None and not self._log.closed:
            self._log.close()

    def log_tail(self, chars: int = 6000) -> str:
        """The end of the server log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    # -- files ---------------------------------------------------------------------------------
    def model_path(self, folder: str, name: str) -> Path:
        """Where a file must go for ComfyUI's folder list `folder` (checkpoints, loras, ...) to show `name`."""
        path = self.base_dir / "models" / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def output_file(self, image_info: dict) -> Path:
        """Path of an output file described by a history entry's {'filename','subfolder','type'}."""
        kind = image_info.get("type", "output")
        return self.base_dir / kind / image_info.get("subfolder", "") / image_info["filename"]

    # -- API -----------------------------------------------------------------------------------
    def object_info(self) -> dict:
        response = requests.get(f"{self.url}/object_info", timeout=60)
        response.raise_for_status()
        return response.json()

    def submit(self, prompt: dict) -> requests.Response:
        """Raw POST /prompt of an API-format prompt (for validation-error tests)."""
        body = {"prompt": prompt, "client_id": uuid.uuid4().hex}
        return requests.post(f"{self.url}/prompt", json=body, timeout=60)

    def rejections(self, prompt: dict) -> list[dict]:
        """Every /prompt validation error as {node, type, input, details}; AssertionError if it was accepted."""
        response = self.submit(prompt)
        assert response.status_code == 400, response.text[:2000]
        return [{"node": node_id, "type": e["type"], "input": e.get("extra_info", {}).get("input_name"),
                 "details": e["details"]}
                for node_id, node in response.json()["node_errors"].items() for e in node["errors"]]

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        """Queue a prompt, wait for it, and return its history entry; AssertionError with ComfyUI's message on failure."""
        response = self.submit(prompt)
        if not response.ok:
            raise AssertionError(f"/prompt rejected the prompt ({response.status_code}): {response.text[:4000]}")
        prompt_id = response.json()["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = requests.get(f"{self.url}/history/{prompt_id}", timeout=30).json().get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") == "error":
                    raise AssertionError(f"ComfyUI execution failed: {_execution_error(entry)}")
                return entry
            if self.process.poll() is not None:
                raise AssertionError(f"ComfyUI died while running the prompt:\n{self.log_tail()}")
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout}s:\n{self.log_tail()}")

    def execution_error(self, prompt: dict, timeout: float = 300.0) -> str:
        """Queue a prompt expected to fail at run time and return ComfyUI's error message."""
        try:
            self.run(prompt, timeout=timeout)
        except AssertionError as error:
            return str(error)
        raise AssertionError("the prompt was expected to fail but succeeded")


def _execution_error(entry: dict) -> str:
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type')}: {data.get('exception_type')}: {data.get('exception_message')}"
    return json.dumps(entry.get("status"))[:2000]


def setup_inprocess(root: Path, cpu: bool = True) -> None:
    """Make `import comfy...` work in this process (ComfyUI's root, never ours, goes on sys.path); on the CPU
    unless cpu=False (then ComfyUI picks its device, as `main.py` without --cpu does: benchmarks on a GPU)."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args  # noqa: PLC0415 - ComfyUI is importable only now

    args.cpu = cpu
    import comfy.model_management  # noqa: F401,PLC0415 - reads args.cpu at import


def install_model(server: ComfyServer, folder: str, source: Path, name: str | None = None) -> str:
    """Hard-link (or copy) a built fixture file into the server's folder list; returns the name ComfyUI shows.

    Not a symlink: the pack refuses links that lead outside their folder (core/safe_paths.py)."""
    name = name or source.name
    target = server.model_path(folder, name)
    if not target.exists():
        try:
            os.link(source.resolve(), target)
        except OSError:  # another file system
            shutil.copy2(source.resolve(), target)
    return name
