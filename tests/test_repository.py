"""The repository is self-contained: no document or module points to files outside it."""

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"\.\./shared|shared/DESIGN\.md|shared/STYLE\.md|\bDESIGN(\.md| §)")


def test_nothing_points_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files", "*.md", "*.py", "*.cfg", "*.toml", "Makefile"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = [name for name in tracked if name != "tests/test_repository.py"
                 and OUTSIDE.search((ROOT / name).read_text(encoding="utf-8"))]
    assert offenders == []
    assert (ROOT / "docs" / "ARCHITECTURE.md").is_file()


def test_cvr_tf_imports_pipelines_and_serving_only_in_the_retraining_loop():
    imports = re.compile(r"^\s*(from|import)\s+(pipelines|serving|experiments)\b", re.M)
    offenders = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "cvr_tf").rglob("*.py"))
                 if imports.search(path.read_text(encoding="utf-8"))]
    assert offenders == ["cvr_tf/retraining/loop.py"]  # docs/ARCHITECTURE.md §1
