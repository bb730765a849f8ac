"""The benchmarks/ tree stays usable by others: scripts take their paths as arguments (no machine paths), import only
public names of medxgan, and every link to a stored demo record resolves (the records of today and demo/archive/).

Static checks only (text and AST, no script is run): fast.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPTS = sorted(p for p in BENCH.rglob("*") if p.suffix in (".py", ".sh") and p.is_file())

# evaluate_speed.py profiles `evaluate` by wrapping the runner's private phases (what it measures is those phases);
# it is the one script allowed to reach private names, and only the runner's and pairs' internals.
PRIVATE_ALLOWED = {"performance/evaluate_speed.py"}


def test_no_benchmark_script_names_a_machine_path():
    offenders = [f"{p.relative_to(BENCH)}:{i}" for p in SCRIPTS for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"(?<![\w.])/(?:work|tmp)/", line)]
    assert not offenders, offenders  # a work folder is an argument (e.g. --out OUT), not a default under /tmp or /work


def _private_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    modules: set[str] = set()  # local names bound to medxgan modules or objects
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "medxgan":
            for alias in node.names:
                if alias.name.startswith("_") or any(part.startswith("_") for part in node.module.split(".")):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update((a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == "medxgan")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_benchmark_scripts_import_only_public_medxgan_names():
    offenders = {str(p.relative_to(BENCH)): uses for p in SCRIPTS if p.suffix == ".py"
                 and str(p.relative_to(BENCH)) not in PRIVATE_ALLOWED and (uses := _private_uses(p))}
    assert not offenders, offenders


def test_the_private_name_check_sees_a_private_import(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("from medxgan.explain.minimal_mask import _upsample, refine_mask\nimport medxgan.evaluate.runner as r\nr._results\n")
    assert _private_uses(script) == ["1: from medxgan.explain.minimal_mask import _upsample", "3: r._results"]


def _expand(spec: str) -> list[str]:
    m = re.search(r"\{([^}]*)\}", spec)
    if not m:
        return [spec]
    return [s for alt in m.group(1).split(",") for s in _expand(spec[:m.start()] + alt + spec[m.end():])]


def test_every_link_to_a_demo_record_resolves():
    texts = [ROOT / "README.md", *BENCH.rglob("*.md"), *(ROOT / "src").rglob("*.py"), *(ROOT / "docs").rglob("*.md")]
    links = {(t.relative_to(ROOT), spec) for t in texts if t.is_file()
             for spec in re.findall(r"benchmarks/demo/([\w{},*./-]*[\w}*-])", t.read_text())}
    assert len(links) >= 20
    missing = [(str(t), spec) for t, spec in sorted(links) for one in _expand(spec) if not list((BENCH / "demo").glob(one))]
    assert not missing, missing


def test_every_archived_demo_record_is_in_the_index():
    archive = BENCH / "demo" / "archive"
    index = (archive / "INDEX.md").read_text()
    folders = sorted(p.name for p in archive.iterdir() if p.is_dir())
    assert len(folders) >= 30
    named = {n for spec in re.findall(r"`([\w{},-]+-\d{4}-\d\d-\d\d)/`", index) for n in _expand(spec)}
    assert set(folders) <= named, sorted(set(folders) - named)
    records = [p for p in (BENCH / "demo").iterdir() if p.is_dir() and p.name != "archive"]
    assert records and all((p / "results.csv").is_file() and (p / "demo.json").is_file() for p in records)
