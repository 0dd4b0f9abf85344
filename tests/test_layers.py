"""The import rules of the layout, read from the source with `ast` (see README, Architecture).

Layers, each importing only those below it:
  galaxy core (galaxy/ but the faces)  ->  engine/  ->  the faces (galaxy/__init__.py, api.py, cli*.py)

1. The galaxy core never imports engine/.
2. Nothing imports a face but another face.
3. torch (torch, torchvision, timm) is imported by galaxy/training/ and the torch backends
   (engine/backends/torch_*.py), the "torch zone". Anywhere else, importing torch or a module
   of the zone at module level is refused: importing such a module never loads torch. A lazy
   import (inside a function) is allowed only in the modules of LAZY_TORCH, each with its
   reason; a new one fails here until it is added there with a reason.
4. No import cycles among galaxy/ and engine/ modules, lazy imports included (a lazy import
   only hides a cycle until the function runs).
5. The optional packages (OPTIONAL: TensorRT, DALI, Ray, pycuda, NVML) are imported only inside
   functions, anywhere: a CPU-only install imports every module.
6. Catalog and table code (galaxy.catalog) reaches, through every import of it and of the
   project modules it imports, no third-party package but those of TABLES (no torch, no PIL).
7. galaxy/__init__.py, which every `import galaxy.x` runs, imports at module level only the
   standard library and galaxy.version.

Edges are the explicit import statements and the names of project modules written as strings
(the backend and pipeline tables, which import_module loads on demand: lazy edges). `from
package import name` is an edge to package.name when that is a module, else to the package.
The faces are galaxy (its __init__), galaxy.api and every galaxy.cli* module.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("galaxy", "engine")
TORCH = {"torch", "torchvision", "timm"}
OPTIONAL = {"tensorrt", "nvidia", "ray", "pycuda", "cuda", "pynvml"}
TABLES = {"numpy", "astropy", "pyarrow", "pandas"}
GPU_TENSORS = "GPU batches are torch CUDA tensors (decoded on the device, bound by pointer)"
LAZY_TORCH = {
    "engine.batching": GPU_TENSORS,
    "engine.tta": GPU_TENSORS,
    "engine.pipelines.dali": GPU_TENSORS,
    "engine.pipelines.dali_gpu": GPU_TENSORS,
    "engine.pipelines.nvjpeg": "torchvision's GPU JPEG decoder",
    "engine.backends.tensorrt": GPU_TENSORS,
    "engine.tensorrt_build": "the GPU's name and compute capability, and the INT8 calibrator's device buffer",
    "engine.backends": "the backend table loads the torch backends by name, on demand",
    "engine.artifacts": "builds the ONNX file on first use (galaxy.training.export)",
    "engine.quantize": "`galaxy quantize --method qat` fine-tunes the network with fake quantization (galaxy.training.qat)",
    "engine.bench_stages": "the plain-PyTorch baseline that bench.py measures against",
    "engine.machine": "the GEMM roofs (torch bf16 on the CPU, fp16 on a GPU) and the CUDA versions",
    "galaxy.cli_models": "`galaxy export` runs galaxy.training.export",
    "galaxy.cli_train": "`galaxy train` and `galaxy distill` run galaxy.training",
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_face(module: str) -> bool:
    return module in ("galaxy", "galaxy.api") or module.startswith("galaxy.cli")


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(path, root)] = path
    return found


def _is_lazy(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside a function (run when it is called, not on import)."""
    lazy = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lazy.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return lazy


def imports(module: str, path: Path, modules) -> list[tuple[str, bool, int]]:
    """(imported module, lazy, line) of every import statement of `module`."""
    tree = ast.parse(path.read_text(), str(path))
    lazy, out = _is_lazy(tree), []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in lazy, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                out.append((target if target in modules else base, id(node) in lazy, node.lineno))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value \
                and node.value in modules:  # a dotted module name: loaded with importlib, on demand
            out.append((node.value, True, node.lineno))
    return out


def graph(root: Path = ROOT):
    modules = project_modules(root)
    return {m: imports(m, p, modules) for m, p in modules.items()}, modules


def _top(name: str) -> str:
    return name.split(".")[0]


def _in_zone(name: str) -> bool:
    return name.startswith("galaxy.training") or name.startswith("engine.backends.torch_")


def violations(root: Path = ROOT) -> list[str]:
    """Every broken rule, as 'module:line: what'."""
    edges, modules = graph(root)
    found = []
    for module, targets in edges.items():
        face, is_core = is_face(module), _top(module) == "galaxy" and not is_face(module)
        for target, lazy, line in targets:
            where = f"{module}:{line}"
            if is_core and _top(target) == "engine":
                found.append(f"{where}: the galaxy core imports {target} (engine/ is a layer above)")
            if is_face(target) and not face:
                found.append(f"{where}: imports the face {target} (only faces import faces)")
            if _top(target) in OPTIONAL and not lazy:
                found.append(f"{where}: imports the optional {target} at module level (import it where it is used)")
            if module == "galaxy" and not lazy and _top(target) not in sys.stdlib_module_names \
                    and target != "galaxy.version":
                found.append(f"{where}: galaxy/__init__.py imports {target}, which every `import galaxy.x` would load")
            torchy = _top(target) in TORCH or (_in_zone(target) and target in modules)
            if torchy and not _in_zone(module):
                if not lazy:
                    found.append(f"{where}: imports {target} at module level outside the torch zone")
                elif module not in LAZY_TORCH:
                    found.append(f"{where}: imports {target} lazily; add {module} to LAZY_TORCH with a reason "
                                 "or keep torch out")
    found += _table_code_reaches(edges, modules)
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(edges, modules)]
    return found


def _table_code_reaches(edges, modules) -> list[str]:
    """Rule 6: the third-party packages outside TABLES that galaxy.catalog reaches, with the path."""
    paths = {m: [m] for m in modules if m.startswith("galaxy.catalog")}
    frontier, found = list(paths), []
    while frontier:
        module = frontier.pop(0)
        for target, _, line in edges[module]:
            top = _top(target)
            if target in modules and target not in paths:
                paths[target] = paths[module] + [target]
                frontier.append(target)
            elif target not in modules and top not in TABLES and top not in sys.stdlib_module_names \
                    and top not in PACKAGES:
                found.append(f"{module}:{line}: catalog code reaches {target} "
                             f"({' -> '.join(paths[module])}); it may use only {', '.join(sorted(TABLES))}")
    return found


def cycles(edges, modules) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan), as a path that closes."""
    adjacency = {m: sorted({t for t, _, _ in targets if t in modules and t != m}) for m, targets in edges.items()}
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in adjacency[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(set(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(adjacency)))
    for node in adjacency:
        if node not in index:
            visit(node)
    return [_close(group, adjacency) for group in groups]


def _close(group: set[str], adjacency) -> list[str]:
    """A path inside `group` from its first member back to it (breadth first)."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for nxt in adjacency[node]:
            if nxt == start:
                return paths[node] + [start]
            if nxt in group and nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                frontier.append(nxt)
    return sorted(group)


def test_the_layers_hold():
    assert violations() == []


def test_lazy_torch_list_names_real_modules_that_still_need_it():
    edges, modules = graph()
    for module in LAZY_TORCH:
        assert module in modules, f"LAZY_TORCH names {module}, which does not exist"
        assert any(_top(t) in TORCH or _in_zone(t) for t, lazy, _ in edges[module] if lazy), \
            f"{module} no longer imports torch lazily: take it off LAZY_TORCH"


def test_the_rules_catch_what_they_are_for(tmp_path):
    """Each rule, broken on purpose in a copy of the tree, is reported."""
    import shutil

    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("models", "samples"))
    assert violations(tmp_path) == []
    with open(tmp_path / "galaxy" / "labels.py", "a") as fh:
        fh.write("\nfrom engine.listing import Item\n")
    with open(tmp_path / "galaxy" / "io" / "sky.py", "a") as fh:
        fh.write("\nfrom galaxy import __version__\n")
    with open(tmp_path / "galaxy" / "catalog" / "read.py", "a") as fh:
        fh.write("\n\ndef later():\n    import torch\n")
    with open(tmp_path / "engine" / "listing.py", "a") as fh:
        fh.write("\n\ndef later():\n    from engine.run import classify\n")
    with open(tmp_path / "engine" / "journal.py", "a") as fh:  # optional at module level; a new face
        fh.write("\nimport ray\nimport nvidia.dali\nfrom galaxy import cli_extra\n")
    (tmp_path / "galaxy" / "cli_extra.py").write_text("import click\n")
    with open(tmp_path / "galaxy" / "catalog" / "text.py", "a") as fh:  # a table loaded by name; PIL
        fh.write("\nLOADERS = {'model': 'galaxy.training.model'}\n\n\ndef later():\n    from PIL import Image\n")
    with open(tmp_path / "galaxy" / "__init__.py", "a") as fh:
        fh.write("\nimport numpy\n")
    found = "\n".join(violations(tmp_path))
    assert "galaxy.labels" in found and "engine.listing (engine/ is a layer above)" in found
    assert "galaxy.io.sky" in found and "the face galaxy" in found
    assert "galaxy.catalog.read" in found and "imports torch lazily" in found
    assert "import cycle:" in found and "engine.listing" in found
    assert "engine.journal:" in found and "imports the optional ray at module level" in found
    assert "imports the optional nvidia.dali at module level" in found
    assert "imports the face galaxy.cli_extra" in found
    assert "catalog code reaches PIL (galaxy.catalog.text)" in found
    assert "catalog code reaches torch (galaxy.catalog.text -> galaxy.training.model)" in found
    assert "galaxy/__init__.py imports numpy" in found


def test_a_cpu_only_classify_never_loads_torch():
    """What rules 3 and 5 are for, checked by running it: the classify path with ONNX Runtime imports no
    torch and none of the optional packages (here, where they are installed)."""
    heavy = sorted(TORCH | OPTIONAL)
    code = ("import sys, galaxy, galaxy.api, galaxy.cli, engine.run, engine.runner, engine.distributed, "
            "engine.evaluate, engine.backends, engine.pipelines, engine.backends.onnxruntime, "
            f"engine.pipelines.reference; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stderr
