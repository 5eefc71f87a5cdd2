"""The package's shape, checked on its source: one direction of dependence, family knowledge in one place,
``videocm.json`` read and written by one module, no paths into the repository."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "videocm"

# lower layers first; a module may import its own layer or lower ones, never a higher one
LAYERS = [
    {"errors", "config", "locations", "runs"},
    {"diffusion"},
    {"data", "models"},
    {"pipeline"},
    {"distill", "training", "evaluation", "recipes"},
    {"demo", "sampling_cli", "serve", "cli", "api", "__init__"},
]
# the one import against the layers, on purpose: the ``videocm.distill`` package is callable as the Python API's
# ``videocm.distill(...)`` (a subpackage and a function cannot share the name otherwise)
UPWARD = {("videocm.distill", "videocm.api")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every videocm module ``path`` imports, at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("videocm"):
                found.add(target)
                for alias in node.names:  # `from . import corruptions` imports a module
                    candidate = f"{target}.{alias.name}"
                    if (SRC.parent / Path(*candidate.split("."))).with_suffix(".py").is_file():
                        found.add(candidate)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("videocm")}
    return found - {name}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: {t for t in imports_of(path) if t in modules} for name, path in modules.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def test_no_import_cycle_between_modules():
    edges = graph()
    visiting, done, cycles = set(), set(), []

    def visit(node, path):
        if node in visiting:
            cycles.append(path[path.index(node):] + [node])
            return
        if node in done:
            return
        visiting.add(node)
        for target in sorted(edges[node]):
            if target != "videocm":  # the package root only re-exports lazily (diffusers' class lookup)
                visit(target, path + [node])
        visiting.discard(node)
        done.add(node)

    for module in sorted(edges):
        visit(module, [])
    assert not cycles, f"import cycles: {cycles[:3]}"


def test_dependencies_point_down_the_layers():
    wrong = [(source, target) for source, targets in graph().items() for target in targets
             if target != "videocm" and layer(target) > layer(source) and (source, target) not in UPWARD]
    assert not wrong, f"imports against the layers: {wrong}"


def test_family_names_appear_only_in_family_files():
    names = ("wan", "unet3d", "cogvideox", "hunyuan")
    pattern = re.compile(r"""(==|!=|\bin\b)\s*\(?\s*["'](%s)["']|["'](%s)["']\s*:""" % ("|".join(names), "|".join(names)))
    found = []
    for path in SRC.rglob("*.py"):
        if "families" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line.split("#")[0]):
                found.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not found, "family branches outside models/families:\n" + "\n".join(found)


def test_model_description_file_named_in_one_module():
    named = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                   if '"videocm.json"' in p.read_text() or "'videocm.json'" in p.read_text())
    assert named == ["models/info.py"]


def test_no_paths_into_the_repository():
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "parents[" in p.read_text()]
    assert not offenders


@pytest.mark.parametrize("module", ["videocm.diffusion"])
def test_the_math_imports_nothing_of_ours(module):
    edges = graph()
    inside = [m for m in edges if m == module or m.startswith(module + ".")]
    outside = {t for m in inside for t in edges[m] if not (t == module or t.startswith(module + "."))}
    assert not outside


def test_training_never_imports_evaluation():
    """The trainer takes a monitor instead: evaluation (the benchmark) may time training, never the reverse."""
    edges = graph()
    wrong = [(m, t) for m, targets in edges.items() if m.startswith("videocm.distill")
             for t in targets if t.startswith("videocm.evaluation")]
    assert not wrong


METHODS = ["lcm", "dcm", "dmd", "control"]  # distill/<name>.py: one method each, on distill/core.py


@pytest.mark.parametrize("method", METHODS)
def test_no_method_file_imports_another_method_file(method):
    """A method is one file on the core: it imports the core and the shared terms, never another method."""
    others = {f"videocm.distill.{m}" for m in METHODS if m != method}
    assert not imports_of(SRC / "distill" / f"{method}.py") & others


def test_the_trainer_asks_a_task_nothing_by_getattr_or_hasattr():
    """Every hook the trainer calls is declared on ``TrainTask`` with its default: no lookups by name on a task."""
    for name in ("trainer.py", "parallel.py"):
        tree = ast.parse((SRC / "distill" / name).read_text())
        lookups = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                   and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                   and node.args and "task" in ast.unparse(node.args[0])]
        assert not lookups, f"{name}: {[ast.unparse(n) for n in lookups]}"


def _compares_with_boundary(function: ast.AST) -> bool:
    """Whether ``function`` orders something against a boundary (``t < boundary``; not ``boundary is None``)."""
    ordering = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
    return any(isinstance(node, ast.Compare) and "boundary" in ast.unparse(node)
               and any(isinstance(op, ordering) for op in node.ops) for node in ast.walk(function))


def test_the_two_expert_guidance_rule_has_one_definition():
    """Wan 2.2's "``guidance_2`` below the boundary" is decided in ``diffusion.sampling.guidance_at`` alone: no
    other function both compares a time with a boundary and picks a second guidance scale."""
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and _compares_with_boundary(node) and \
                    re.search(r"\b(guidance_2|scale_2)\b", ast.unparse(node)):
                found.append(f"{module_name(path)}.{node.name}")
    assert found == ["videocm.diffusion.sampling.guidance_at"]


def test_config_deletes_nothing():
    """``config.py`` parses and validates; deleting run folders and outputs is ``runs.py``'s."""
    tree = ast.parse((SRC / "config.py").read_text())
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    deleting = {c for c in calls if c.endswith(("rmtree", ".unlink", ".rmdir", "os.remove", "os.unlink"))}
    assert not deleting


def test_the_worked_example_of_a_new_method_trains_a_student(tiny_teachers, tmp_path):
    """docs/architecture.md's example method, loaded as ``videocm.distill.fixed_skip`` from the page itself, trains
    on the shared trainer and writes a student folder whose weights moved from the teacher's."""
    import importlib.util
    import sys

    import torch
    from safetensors.torch import load_file

    page = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    section = page[page.index("## Adding a method: a worked example"):]
    code = section[section.index("```python") + len("```python"):]
    code = code[:code.index("```")]
    path = tmp_path / "fixed_skip.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("videocm.distill.fixed_skip", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        out = tmp_path / "student"
        config = module.FixedSkipConfig(teacher=str(tiny_teachers["wan"]), out=str(out), steps=2, batch_size=2,
                                        latent_pool=4, sample_every=0, warmup_steps=1, grid_points=10, cpu=True)
        module.distill_fixed_skip(config, progress=False)
    finally:
        del sys.modules[spec.name]
    weights = "transformer/diffusion_pytorch_model.safetensors"
    student, teacher = load_file(out / weights), load_file(tiny_teachers["wan"] / weights)
    assert student.keys() == teacher.keys()
    assert any(not torch.allclose(student[k].float(), teacher[k].float()) for k in teacher)
    assert (out / "checkpoints" / "step-2" / "target.safetensors").is_file()
