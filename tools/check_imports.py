"""Check the layering: which package may import which, and no import cycles between modules.

The compiler (toolchain) imports nothing outside itself; targets and
frontends build on the compiler and not on each other; the application
(snn_compile) sits on top and nothing imports it. Every import counts,
the ones inside functions too: a lazy import is still a dependency.

    python tools/check_imports.py          # prints violations, exit 1 if any
    python tools/check_imports.py --stats  # also module and line counts
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("toolchain", "targets", "frontends", "snn_compile")
ALLOWED = {
    "toolchain": {"toolchain"},
    "targets": {"targets", "toolchain"},
    "frontends": {"frontends", "toolchain"},
    "snn_compile": {"snn_compile", "toolchain", "targets", "frontends"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports, resolved to the longest known module name."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            parts = candidate.split(".")
            for end in range(len(parts), 0, -1):
                prefix = ".".join(parts[:end])
                if prefix in known:
                    if prefix != name:
                        targets.add(prefix)
                    break
    return targets


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def import_graph() -> dict[str, set[str]]:
    """Every project module -> the project modules it imports."""
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def problems(graph: dict[str, set[str]]) -> list[str]:
    """Imports across layers the layering forbids, then cycles between modules."""
    found = []
    for name, targets in sorted(graph.items()):
        layer = name.split(".")[0]
        for target in sorted(targets):
            if target.split(".")[0] not in ALLOWED[layer]:
                found.append(f"layering: {name} imports {target}")
    return found + [f"cycle: {' <-> '.join(component)}" for component in cycles(graph)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stats", action="store_true", help="also print module and line counts")
    args = parser.parse_args(argv)
    found = problems(import_graph())
    for problem in found:
        print(problem)
    if args.stats:
        lines = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
        by_package = defaultdict(int)
        for name, count in lines.items():
            by_package[name.split(".")[0]] += count
        largest = max(lines, key=lines.get)
        print(f"{len(lines)} modules, {sum(lines.values())} lines "
              f"({', '.join(f'{p} {n}' for p, n in sorted(by_package.items()))}); "
              f"largest {largest} ({lines[largest]} lines)")
    print(f"{len(found)} import problems" if found else "imports: layering and cycles ok")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
