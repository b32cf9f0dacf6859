"""What ComfyUI Manager and the Comfy Registry read: pyproject.toml's [project] and [tool.comfy] tables and
requirements.txt (Manager installs from it for git installs; the Registry from pyproject's dependencies)."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_lines() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_registry_fields_follow_its_rules():
    """docs.comfy.org/registry/specifications: node id of letters, digits, - _ . without consecutive specials and
    not starting with one; X.Y.Z version; a repository URL; a publisher id; classifiers from its known set."""
    data = pyproject()
    project, comfy = data["project"], data["tool"]["comfy"]
    assert (
        re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*", project["name"]) and len(project["name"]) < 100
    )
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["urls"]["Repository"].startswith("https://github.com/")
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert all(value not in ("", None) for value in comfy.values() if not isinstance(value, list))  # no placeholders
    known = ("Operating System :: ", "Environment :: GPU :: ", "Environment :: NPU :: ")
    assert all(c.startswith(known) for c in project.get("classifiers", []))


def test_dependencies_equal_requirements_and_never_pin_torch():
    """Both install routes get the same packages; torch comes with ComfyUI (a pin would replace its CUDA build)."""
    dependencies = pyproject()["project"]["dependencies"]
    assert dependencies == requirement_lines()
    names = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in dependencies}
    assert not names & {"torch", "torchvision", "torchaudio", "comfyui-frontend-package"}


def test_readme_names_the_node_id():
    assert f"`{pyproject()['project']['name']}`" in (ROOT / "README.md").read_text()
