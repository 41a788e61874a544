"""The shape of the `dcnr` command: one table lists every command, each command module imports on its
own, every `--help` explains, and every command the README shows exists."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer.main
from typer.testing import CliRunner

from dcnr.cli.main import COMMANDS, GROUPS, app

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "dcnr" / "cli"
COMMAND_MODULES = ("network", "session", "checkpoint", "vocab", "dataset", "pnode", "serving", "serve", "demo", "token",
                   "validation", "volunteer", "relay")


def _is_group(cmd: Any) -> bool:
    return hasattr(cmd, "commands")


def _tree() -> dict[tuple[str, ...], Any]:
    """Every command of the built app (typer's click objects) by its path, groups included."""
    found: dict[tuple[str, ...], Any] = {}

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        found[path] = cmd
        if _is_group(cmd):
            for name, sub in cmd.commands.items():
                walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def test_the_table_lists_every_command_function_once() -> None:
    """Each command module's public functions are exactly the commands the table names from it."""
    listed = [c.fn for c in COMMANDS] + [g.callback for g in GROUPS if g.callback is not None]
    assert len(listed) == len(set(listed)), "a function is listed twice"
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"dcnr.cli.{name}")
        public = {fn for n, fn in inspect.getmembers(module, inspect.isfunction)
                  if fn.__module__ == module.__name__ and not n.startswith("_")}
        assert public == {fn for fn in listed if fn.__module__ == module.__name__}, name
    modules = {p.stem for p in CLI.glob("*.py")} - {"__init__", "main", "common", "logs"}
    assert modules == set(COMMAND_MODULES), "a command module is missing from this test"


def test_the_app_has_exactly_the_table() -> None:
    paths = {p for p, cmd in _tree().items() if p and not _is_group(cmd)}
    paths |= {(g.name,) for g in GROUPS}
    assert paths == {(c.name,) if c.group is None else (c.group, c.name) for c in COMMANDS} | {
        (g.name,) for g in GROUPS}


def test_no_cli_module_imports_main_or_forms_a_cycle() -> None:
    """Static: the imports between `dcnr.cli` modules form no cycle, and only `main` knows the table."""
    graph: dict[str, set[str]] = {}
    for path in CLI.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "dcnr.cli":
                    deps |= {a.name for a in node.names}
                elif node.module.startswith("dcnr.cli."):
                    deps.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[2] for a in node.names if a.name.startswith("dcnr.cli.")}
        graph[path.stem] = deps
    assert not any("main" in deps for deps in graph.values())
    done: set[str] = set()

    def visit(name: str, stack: tuple[str, ...]) -> None:
        assert name not in stack, f"import cycle: {' -> '.join((*stack, name))}"
        if name not in done:
            for dep in graph.get(name, ()):
                visit(dep, (*stack, name))
            done.add(name)

    for name in graph:
        visit(name, ())


def test_each_cli_module_imports_alone() -> None:
    """In a fresh interpreter, each `dcnr.cli` module is imported first among the CLI modules (they
    are all forgotten between two imports; the rest of dcnr stays loaded, which keeps it quick)."""
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {sorted(p.stem for p in CLI.glob('*.py') if p.stem != '__init__')!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'dcnr.cli' or m.startswith('dcnr.cli.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module('dcnr.cli.' + name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def _flat(text: str) -> str:
    """Help text without rich's box drawing and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def test_every_help_explains_the_command_and_each_option() -> None:
    runner = CliRunner()
    for path, cmd in _tree().items():
        if not path:
            continue
        assert cmd.help and cmd.help.strip(), f"dcnr {' '.join(path)} has no help"
        for param in cmd.params:
            if param.name != "help" and not getattr(param, "hidden", False):
                assert getattr(param, "help", None), f"dcnr {' '.join(path)}: {param.name} has no help"
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, (path, res.output)
        first = _flat(cmd.help).split(". ")[0][:60]
        assert first in _flat(res.output), (path, first)


def test_every_command_in_the_readme_exists() -> None:
    tree = _tree()
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    uses = re.findall(r"\bdcnr ([a-z]+)(?: ([a-z]+))?", "\n".join(blocks))
    assert len(uses) > 20
    for first, second in uses:
        assert (first,) in tree, first
        if _is_group(tree[(first,)]) and second and (first, second) not in tree:
            assert tree[(first,)].invoke_without_command, f"dcnr {first} {second}"
