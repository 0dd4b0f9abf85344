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

Edges are the explicit import statements. `from package import name` is an edge to
package.name when that is a module, else to the package.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("galaxy", "engine")
FACES = {"galaxy", "galaxy.api", "galaxy.cli", "galaxy.cli_common", "galaxy.cli_entry", "galaxy.cli_framing",
         "galaxy.cli_train"}
TORCH = {"torch", "torchvision", "timm"}
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
    "engine.autotune": "records torch's version in the timing-cache key; builds the ONNX file on first use",
    "engine.quantize": "`galaxy quantize --method qat` fine-tunes the network with fake quantization (galaxy.training.qat)",
    "engine.benchmark": "the plain-PyTorch baseline that bench.py measures against",
    "engine.machine": "the GEMM roofs (torch bf16 on the CPU, fp16 on a GPU) and the CUDA versions",
    "galaxy.cli": "`galaxy export` runs galaxy.training.export",
    "galaxy.cli_train": "`galaxy train` and `galaxy distill` run galaxy.training",
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "models" not in path.relative_to(root).parts:
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
        is_face, is_core = module in FACES, _top(module) == "galaxy" and module not in FACES
        for target, lazy, line in targets:
            where = f"{module}:{line}"
            if is_core and _top(target) == "engine":
                found.append(f"{where}: the galaxy core imports {target} (engine/ is a layer above)")
            if target in FACES and not is_face:
                found.append(f"{where}: imports the face {target} (only faces import faces)")
            torchy = _top(target) in TORCH or (_in_zone(target) and target in modules)
            if torchy and not _in_zone(module):
                if not lazy:
                    found.append(f"{where}: imports {target} at module level outside the torch zone")
                elif module not in LAZY_TORCH:
                    found.append(f"{where}: imports {target} lazily; add {module} to LAZY_TORCH with a reason "
                                 "or keep torch out")
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(edges, modules)]
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
    found = "\n".join(violations(tmp_path))
    assert "galaxy.labels" in found and "engine.listing (engine/ is a layer above)" in found
    assert "galaxy.io.sky" in found and "the face galaxy" in found
    assert "galaxy.catalog.read" in found and "imports torch lazily" in found
    assert "import cycle:" in found and "engine.listing" in found


def test_a_cpu_only_classify_never_loads_torch():
    """What rule 3 is for, checked by running it: the classify path with ONNX Runtime imports no torch."""
    code = ("import sys, galaxy, galaxy.api, galaxy.cli, engine.run, engine.runner, engine.distributed, "
            "engine.evaluate, engine.backends.onnxruntime, engine.pipelines.reference; "
            "print('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False", out.stderr
