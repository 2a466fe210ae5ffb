"""The layers hold: import-linter's contracts (pyproject.toml), and tests/core never imports dagster."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "BROKEN" not in out.stdout and out.stdout.count("KEPT") >= 4, out.stdout[-2000:]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_tests_never_import_dagster():
    offenders = {
        p.name: sorted(m for m in _imported_modules(p) if m.split(".")[0] in ("dagster", "alqa_dagster"))
        for p in sorted((REPO / "tests" / "core").glob("*.py"))
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_every_architecture_of_the_registry_table_has_a_builder():
    from alqa_core.config.models import ARCHITECTURES, PRESETS, SIZES
    from alqa_core.ensemble.networks import BUILDERS

    assert tuple(BUILDERS) == ARCHITECTURES
    assert set(PRESETS) == {(a, s) for a in ARCHITECTURES for s in SIZES}
