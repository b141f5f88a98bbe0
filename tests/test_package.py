"""Packaging: one namespaced import name, a light import, the CLI, and pyproject listing every subpackage."""

import subprocess
import sys
from pathlib import Path

import tomllib

import comfy_aig
from comfy_aig.cli import main

REPO = Path(comfy_aig.__file__).resolve().parent


def test_import_is_light_and_namespaced(tmp_path):
    code = (
        "import sys, comfy_aig, comfy_aig.core.schedules, comfy_aig.cli\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'open_clip', 'comfy', 'comfy_api', 'nodes')"
        " if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_bare_top_level_packages_installed(tmp_path):
    code = "import importlib.util as u; print([n for n in ('core', 'nodes', 'training') if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pyproject_lists_every_subpackage():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {"comfy_aig"}
    for init in REPO.rglob("__init__.py"):
        relative = init.parent.relative_to(REPO)
        if relative.parts and relative.parts[0] in ("core", "nodes", "training"):
            found.add(".".join(("comfy_aig", *relative.parts)))
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_entrypoint_only_at_root():
    text = (REPO / "__init__.py").read_text()
    assert "async def comfy_entrypoint" in text and "NODE_CLASS_MAPPINGS" not in text
    assert comfy_aig.WEB_DIRECTORY == "./web"


def test_cli_help_and_schedule(capsys):
    out = subprocess.run([sys.executable, "-m", "comfy_aig.cli", "--help"], capture_output=True, text=True, check=True)
    assert "schedule" in out.stdout
    assert main(["schedule", "power", "--p", "2", "--steps", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# power(p=2)"
    assert [float(line.split("gamma=")[1]) for line in lines[1:]] == [0.0, 0.0625, 0.25, 0.5625]


def test_cli_bad_schedule_is_a_clear_error(capsys):
    assert main(["schedule", "power", "--p", "0"]) == 2
    assert "valid range is (0.0, 100.0]" in capsys.readouterr().err
