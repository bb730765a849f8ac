"""Imports point down the layers (docs: ../shared/DESIGN.md, README "Project layout").

Bottom to top: runtime < data < classifiers < {gan, translate} < explain < evaluate < report < the top
(medxgan/__init__, pipeline, demo, cli, __main__). Every import of a medxgan module counts, also one
inside a function (the usual way to hide a cycle) and ``importlib.import_module("medxgan...")``.
gan/ and translate/ are siblings: neither imports the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS = {"runtime": 0, "data": 1, "classifiers": 2, "gan": 3, "translate": 3, "explain": 4, "evaluate": 5, "report": 6}
TOP = 7  # everything else: the package root, pipeline, demo, cli, __main__


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(module: str) -> int:
    return LAYERS.get(_package(module), TOP)


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imported(node: ast.AST, module: str, is_pkg: bool, subpackages: set[str]) -> list[str]:
    """medxgan modules an AST node imports (resolving relative imports and `from medxgan import gan`)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            pkg = module.split(".") if is_pkg else module.split(".")[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([node.module] if node.module else []))
        if base == "medxgan":  # `from medxgan import gan` imports the subpackage, `import X` the root
            return [f"medxgan.{a.name}" if a.name in subpackages else "medxgan" for a in node.names]
        return [base]
    if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__"):
        if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            return [node.args[0].value]
    return []


def layer_violations(src: Path = SRC) -> list[str]:
    """One line per import that points up (or sideways between gan/ and translate/)."""
    root = src / "medxgan"
    subpackages = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()} | {
        p.stem for p in root.glob("*.py")}
    bad = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, src)
        here = _package(module)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for target in _imported(node, module, path.name == "__init__.py", subpackages):
                if target != "medxgan" and not target.startswith("medxgan."):
                    continue
                there = _package(target)
                if there == here:
                    continue
                if _layer(target) > _layer(module) or (_layer(target) == _layer(module) < TOP):
                    bad.append(f"{path.relative_to(src)}:{node.lineno}: {module} ({here}) imports {target} ({there})")
    return bad


def test_imports_point_down():
    assert layer_violations() == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / "medxgan" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_upward_imports_are_caught(tmp_path):
    """The checker itself: a function-level upward import, a sibling import and a dynamic one are found."""
    src = _tree(tmp_path, {
        "__init__.py": "from medxgan.pipeline import MedXGAN\n",  # the top may import anything
        "pipeline.py": "from medxgan.report import figures\nfrom medxgan.gan import train\n",
        "runtime/__init__.py": "",
        "report/__init__.py": "from medxgan.evaluate import tables\n",  # down: fine
        "evaluate/__init__.py": "",
        "gan/__init__.py": "def f():\n    from medxgan.explain import lig\n",  # up, hidden in a function
        "translate/__init__.py": "from medxgan.gan import networks\n",  # sideways between siblings
        "data/__init__.py": "import importlib\nM = importlib.import_module('medxgan.classifiers')\n",  # up, dynamic
        "classifiers/__init__.py": "from medxgan import __version__\n",  # the package root is the top
        "explain/__init__.py": "",
    })
    bad = layer_violations(src)
    assert len(bad) == 4, bad
    assert any("medxgan.gan (gan) imports medxgan.explain" in b for b in bad)
    assert any("medxgan.translate (translate) imports medxgan.gan" in b for b in bad)
    assert any("medxgan.data (data) imports medxgan.classifiers" in b for b in bad)
    assert any("medxgan.classifiers (classifiers) imports medxgan (__init__)" in b for b in bad)


def test_deprecated_gan_alias_needs_no_upward_import_or_patch():
    """``medxgan.gan.MedXGAN`` (0.1) still resolves, with a DeprecationWarning, to the pipeline's class; the package
    root no longer sets it on the gan package (no monkey-patch) and gan/ imports nothing above it."""
    import warnings

    import medxgan.gan as gan_pkg
    from medxgan.pipeline import MedXGAN

    assert "MedXGAN" not in vars(gan_pkg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from medxgan.gan import MedXGAN as alias
    assert alias is MedXGAN and any("deprecated" in str(w.message) for w in caught)
