"""Architecture rules: the engine stays headless."""

import ast
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import app.engine

FORBIDDEN = ("PySide6", "shiboken6", "qasync", "pyvista", "pyvistaqt", "platformdirs")
ENGINE = Path(app.engine.__file__).parent


def _engine_modules():
    return sorted(m.name for m in pkgutil.walk_packages([str(ENGINE)], prefix="app.engine."))


def test_engine_sources_import_no_gui_package():
    offenders = []
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_every_engine_module_loads_no_gui_package(imported_packages):
    assert imported_packages(_engine_modules(), FORBIDDEN) == []


def test_import_linter_contract_holds():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a test dependency"
    out = subprocess.run([lint], capture_output=True, text=True, cwd=ENGINE.parents[1])
    assert out.returncode == 0, out.stdout + out.stderr
