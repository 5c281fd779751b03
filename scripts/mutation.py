"""Mutation testing of the alarm machine, the preprocessing and the processor's restore path.

Not part of CI (it takes tens of minutes). A small own mutator: every mutant is one
operator or constant change, made on the module's AST and written (with `ast.unparse`)
into a COPY of the repository, never into the working tree, so that other work on the
checkout is not disturbed. Each mutant runs only the fast tests of its module:

    wtbi_monitor/alarms.py           tests/alarms
    wtbi_monitor/preprocessing/*.py  tests/preprocessing
    wtbi_monitor/scoring.py          tests/streaming/test_processor.py (its restore,
                                     snapshot and repeated-record tests), restore path only:
                                     `StreamProcessor.snapshot`, `StreamProcessor.restore`
                                     and in `prepare` the skip of records a
                                     restored snapshot contains and the order
                                     check's start at the restored last time

A mutant is killed when its tests fail; one whose tests run past the timeout (default
max(300 s, 5 x the unmutated run)) is reported as a timeout. Usage (docs/mutation.md):

    nice -n 10 python scripts/mutation.py [--only alarms|preprocessing|scoring]
        [--mutant ID ...] [--list] [--timeout S] [--json reports/mutation.json]
        [--again EARLIER.json]   # keep the killed mutants of an earlier run, rerun the rest

Mutations: comparison operators (< <=, > >=, == !=, is / is not, in / not in), arithmetic
and bit operators (+ -, * /, // /, % //, ** *, | &), augmented assignments, `and` / `or`,
removing `not` and unary minus, integer and float constants (+1), True / False; on the
restore path (the snapshot and restore functions of every target and the scoring.py
region) also deleting an assignment or call statement.
Not mutated: strings, annotations, docstrings, decorators, declarative keyword arguments
(`init=`, `repr=`, `frozen=`, `strict=`, `compare=`, `kw_only=`) and statements marked
`# pragma: no cover`.
"""

from __future__ import annotations

import argparse
import ast
import copy
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTEST = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
PYTEST += ["--hypothesis-seed=0"]
#: the processor's restore-path tests, the quick ones first (each mutant stops at its
#: first failure)
PROCESSOR_TESTS = [
    f"tests/streaming/test_processor.py::{name}"
    for name in (
        "test_an_unknown_snapshot_version_is_refused",
        "test_a_failed_restore_leaves_no_half_restored_turbine",
        "test_a_snapshot_of_another_model_version_restores_the_stream_but_not_the_alarms",
        "test_a_repeated_reading_in_the_next_batch",
        "test_a_bad_record_goes_to_dead_letters_and_does_not_disturb_good_ones",
        "test_snapshot_newer_than_the_commit_skips_what_it_contains",
        "test_restore_from_snapshot_continues_exactly",
    )
]
TARGETS: dict[str, tuple[list[str], list[str]]] = {
    # group: (files, pytest arguments)
    # --noconftest: these tests use no shared fixture, and skipping it skips importing torch
    "alarms": (["wtbi_monitor/alarms.py"], ["--noconftest", "tests/alarms"]),
    "preprocessing": (
        sorted(
            str(p.relative_to(ROOT))
            for p in (ROOT / "wtbi_monitor/preprocessing").glob("*.py")
            if p.name != "__init__.py"
        ),
        ["--noconftest", "tests/preprocessing"],
    ),
    "scoring": (["wtbi_monitor/scoring.py"], PROCESSOR_TESTS),
}
#: scoring.py: only these functions (the restore path), and in `prepare` the statements
#: that use the restored state (`_restore_statement`)
RESTORE_PATH = {"StreamProcessor.snapshot", "StreamProcessor.restore"}
RESTORE_PATH_PARTIAL = {"StreamProcessor.prepare"}
#: statements are deleted (replaced by `pass`) only in these functions (in every target)
#: and on the restore path of scoring.py: what a snapshot writes and a restore reads
DELETE_IN = {"snapshot", "restore", "_active_json", "_active_from"}
DECLARATIVE_KEYWORDS = {"init", "repr", "frozen", "strict", "compare", "kw_only", "eq"}

COMPARE = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
BINARY = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.BitOr: ast.BitAnd,
    ast.BitAnd: ast.BitOr,
    ast.BitXor: ast.BitOr,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
}
SYMBOL = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.And: "and",
    ast.Or: "or",
}


@dataclass
class Mutant:
    """One mutation site (`id` is stable while the line does not move)."""

    id: str
    group: str
    file: str
    line: int
    function: str
    change: str
    source: str
    index: int  # position among the file's mutation sites (see `_collect`)
    status: str = "pending"  # killed, timeout, survived
    seconds: float = 0.0
    failed: str = ""


# ---------------------------------------------------------------------- finding sites


def _skipped_lines(source: str, tree: ast.Module) -> set[int]:
    """Lines of statements marked `# pragma: no cover` (the whole statement)."""
    lines = source.splitlines()
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and "pragma: no cover" in lines[node.lineno - 1]:
            out.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return out


def _sites(tree: ast.Module, restrict: bool) -> Iterator[tuple[ast.AST, str, str]]:
    """(node, kind, function) of every mutable node in walk order (deterministic)."""

    def visit(node: ast.AST, scope: list[str], in_region: bool) -> Iterator[tuple]:
        for field, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            for child in children:
                if not isinstance(child, ast.AST):
                    continue
                if field in {"annotation", "returns", "decorator_list"}:
                    continue  # not evaluated (postponed annotations) or declarative
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = ".".join([*scope, child.name])
                    region = not restrict or name in RESTORE_PATH
                    if restrict and name in RESTORE_PATH_PARTIAL:
                        yield from _partial(child, name)
                        continue
                    yield from visit(child, [*scope, child.name], region)
                    continue
                if in_region:
                    yield from _kinds(child, ".".join(scope), deletions=restrict)
                yield from visit(child, scope, in_region)

    def _partial(func: ast.AST, name: str) -> Iterator[tuple]:
        for stmt in ast.walk(func):
            if isinstance(stmt, ast.stmt) and _restore_statement(stmt):
                for node in ast.walk(stmt):
                    yield from _kinds(node, name, deletions=True)

    yield from visit(tree, [], not restrict)


def _restore_statement(stmt: ast.stmt) -> bool:
    """A statement of `prepare` on the restore path.

    The skip of records a restored snapshot contains (the `if` whose body counts
    `skipped`) and the order check's start at the restored stream's last time
    (`p.last_time = known.stream.last_time_ms ...`).
    """
    if isinstance(stmt, ast.If):
        return any(
            isinstance(s, ast.AugAssign)
            and isinstance(s.target, ast.Name)
            and s.target.id == "skipped"
            for s in stmt.body
        )
    return (
        isinstance(stmt, ast.Assign)
        and any(isinstance(t, ast.Attribute) and t.attr == "last_time" for t in stmt.targets)
        and any(isinstance(n, ast.Name) and n.id == "known" for n in ast.walk(stmt.value))
    )


def _kinds(node: ast.AST, function: str, *, deletions: bool) -> Iterator[tuple[ast.AST, str, str]]:
    """The mutations of one node; statement deletions on the restore path only."""
    restore_path = deletions or function.rsplit(".", 1)[-1] in DELETE_IN
    if restore_path and _deletable(node):
        yield node, "delete", function
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in COMPARE:
                yield node, f"compare:{i}", function
    elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in BINARY:
        yield node, "binary", function
    elif isinstance(node, ast.BoolOp):
        yield node, "boolop", function
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        yield node, "unary", function
    elif isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float)):
        yield node, "constant", function


def _declarative_constants(tree: ast.Module) -> set[int]:
    """Ids of constants that are declarative keyword arguments (init=False, strict=True)."""
    return {
        id(k.value)
        for k in ast.walk(tree)
        if isinstance(k, ast.keyword)
        and k.arg in DECLARATIVE_KEYWORDS
        and isinstance(k.value, ast.Constant)
    }


def _collect(tree: ast.Module, source: str, restrict: bool) -> list[tuple[ast.AST, str, str]]:
    skip = _skipped_lines(source, tree)
    declarative = _declarative_constants(tree)
    seen: set[tuple[int, str]] = set()
    out = []
    for node, kind, function in _sites(tree, restrict):
        if getattr(node, "lineno", 0) in skip or id(node) in declarative:
            continue
        if (id(node), kind) in seen:  # `_partial` may reach a node twice
            continue
        seen.add((id(node), kind))
        out.append((node, kind, function))
    return out


def _deletable(node: ast.AST) -> bool:
    """Assignments and call statements (not docstrings, returns or control flow)."""
    if isinstance(node, (ast.Assign, ast.AugAssign)):
        return True
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)


def _as(node: ast.AST, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(node, kind):
        msg = f"expected {kind}, got {type(node).__name__}"
        raise TypeError(msg)
    return node


def _mutate(node: ast.AST, kind: str) -> tuple[ast.AST, str]:
    """Apply the mutation to `node` in place (or return a replacement) and describe it."""
    if kind.startswith("compare:"):
        node = _as(node, ast.Compare)
        i = int(kind.split(":")[1])
        old = type(node.ops[i])
        node.ops[i] = COMPARE[old]()
        return node, f"{SYMBOL[old]} -> {SYMBOL[COMPARE[old]]}"
    if kind == "binary":
        node = _as(node, (ast.BinOp, ast.AugAssign))
        old = type(node.op)
        node.op = BINARY[old]()
        eq = "=" if isinstance(node, ast.AugAssign) else ""
        return node, f"{SYMBOL[old]}{eq} -> {SYMBOL[BINARY[old]]}{eq}"
    if kind == "boolop":
        node = _as(node, ast.BoolOp)
        old = type(node.op)
        node.op = ast.Or() if old is ast.And else ast.And()
        return node, f"{SYMBOL[old]} -> {SYMBOL[type(node.op)]}"
    if kind == "delete":
        return ast.Pass(), "delete statement"
    if kind == "unary":
        node = _as(node, ast.UnaryOp)
        word = "not" if isinstance(node.op, ast.Not) else "unary -"
        return node.operand, f"remove {word}"
    node = _as(node, ast.Constant)
    value = node.value
    if isinstance(value, bool):
        node.value = not value
    elif isinstance(value, int):
        node.value = value + 1
    else:
        node.value = value + 1.0
    return node, f"{value!r} -> {node.value!r}"


class _Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, replacement: ast.AST) -> None:
        self.target, self.replacement = target, replacement

    def visit(self, node: ast.AST) -> ast.AST:
        if node is self.target:
            return self.replacement
        return super().visit(node)


def mutants(group: str, files: list[str], base: Path) -> list[Mutant]:
    """Every mutant of the group's files (read under `base`, the copy when running)."""
    out: list[Mutant] = []
    for file in files:
        source = (base / file).read_text()
        tree = ast.parse(source)
        lines = source.splitlines()
        for k, (node, kind, function) in enumerate(_collect(tree, source, group == "scoring")):
            probe = copy.deepcopy(node)
            _, change = _mutate(probe, kind)
            line = node.lineno  # type: ignore[attr-defined]
            col = node.col_offset  # type: ignore[attr-defined]
            ident = f"{Path(file).name}:{line}:{col}:{kind}"
            if any(o.id == ident for o in out):  # nested operators start at one column
                ident += f"#{sum(o.id.split('#')[0] == ident for o in out) + 1}"
            source_line = lines[line - 1].strip()
            out.append(Mutant(ident, group, file, line, function, change, source_line, k))
    return out


def mutated_source(m: Mutant, source: str) -> str:
    """The mutant's module source, from the unmutated `source` it was found in."""
    tree = ast.parse(source)
    sites = _collect(tree, source, m.group == "scoring")
    node, kind, _ = sites[m.index]
    replacement, _ = _mutate(node, kind)
    if replacement is not node:
        tree = _Replace(node, replacement).visit(tree)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree) + "\n"


# ---------------------------------------------------------------------- running


def make_copy(work: Path) -> None:
    """A fresh copy of what the tests need, without caches."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)

    def no_cache(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        return None if "__pycache__" in parts or ".hypothesis" in parts else info

    archive = work / "src.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("wtbi_monitor", "tests", "pyproject.toml", "configs"):
            if (ROOT / name).exists():
                tar.add(ROOT / name, arcname=name, filter=no_cache)
    with tarfile.open(archive) as tar:
        tar.extractall(work, filter="data")
    archive.unlink()


def environment(work: Path) -> dict[str, str]:
    """The tests' environment: the copy first on the path, no byte code written."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(work)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a stale .pyc must never stand for a mutant
    env.pop("PYTEST_ADDOPTS", None)
    return env


def check_imports_the_copy(work: Path) -> None:
    """The venv's package is an editable install of the working tree: make sure the copy wins."""
    code = (
        "import wtbi_monitor.alarms as a, wtbi_monitor.scoring as s; print(a.__file__, s.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=work,
        env=environment(work),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not all(Path(p).resolve().is_relative_to(work.resolve()) for p in out):
        msg = f"the copy's package is not the one imported: {out}"
        raise SystemExit(msg)


def run_tests(work: Path, args: list[str], timeout: float) -> tuple[str, float, str]:
    """('passed' | 'failed' | 'timeout', seconds, first failing test)."""
    shutil.rmtree(work / ".hypothesis", ignore_errors=True)  # no replay of other mutants
    start = time.monotonic()
    proc = subprocess.Popen(
        [*PYTEST, *args],
        cwd=work,
        env=environment(work),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "timeout", time.monotonic() - start, ""
    seconds = time.monotonic() - start
    failed = next(
        (ln.split()[1] for ln in out.splitlines() if ln.startswith(("FAILED", "ERROR"))), ""
    )
    if proc.returncode == 0:
        return "passed", seconds, ""
    return "failed", seconds, failed or out.strip().splitlines()[-1][:200]


def baseline(work: Path, groups: list[str]) -> dict[str, float]:
    """Unmutated (but unparsed) modules must pass; a canary mutant must fail."""
    seconds: dict[str, float] = {}
    for group in groups:
        files, args = TARGETS[group]
        originals = {f: (work / f).read_text() for f in files}
        for f in files:  # the same ast.unparse round trip the mutants get
            (work / f).write_text(ast.unparse(ast.parse(originals[f])) + "\n")
        status, took, failed = run_tests(work, args, timeout=1800)
        if status != "passed":
            msg = f"baseline of {group} does not pass: {failed}"
            raise SystemExit(msg)
        canary = files[0]
        (work / canary).write_text('raise RuntimeError("mutation canary")\n' + originals[canary])
        status, _, _ = run_tests(work, args, timeout=1800)
        for f in files:
            (work / f).write_text(originals[f])
        if status == "passed":
            msg = f"canary of {group} survived: the tests do not import the copy"
            raise SystemExit(msg)
        seconds[group] = took
        print(f"baseline {group}: {took:.0f} s", flush=True)
    return seconds


def main() -> None:
    """Generate, run and report the mutants."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(TARGETS), action="append")
    parser.add_argument("--mutant", action="append", help="run only these ids")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--work", type=Path, default=Path("/tmp/wtbi-mutation"))  # noqa: S108
    parser.add_argument("--timeout", type=float, default=None, help="seconds per mutant")
    parser.add_argument("--json", type=Path, default=ROOT / "reports" / "mutation.json")
    parser.add_argument(
        "--again",
        type=Path,
        help="an earlier run's JSON: keep its killed mutants, run the others again",
    )
    args = parser.parse_args()

    groups = args.only or list(TARGETS)
    if not args.list:
        # Mutants are found in and applied to the copy, so that edits of the working tree
        # during the run (others work in it) cannot shift them.
        make_copy(args.work)
        check_imports_the_copy(args.work)
    base = ROOT if args.list else args.work
    todo = [m for g in groups for m in mutants(g, TARGETS[g][0], base)]
    if args.mutant:
        todo = [m for m in todo if m.id in set(args.mutant)]
    if args.list:
        for m in todo:
            print(f"{m.id:45} {m.change:18} {m.source}")
        print(f"{len(todo)} mutants")
        return
    done: list[Mutant] = []
    if args.again:
        earlier = {_key(m): m for m in json.loads(args.again.read_text())["mutants"]}
        for m in todo:
            old = earlier.get(_key(asdict(m)))
            if old is not None and old["status"] == "killed":  # timeouts run again
                m.status, m.seconds, m.failed = old["status"], old["seconds"], old["failed"]
                done.append(m)
        print(f"{len(done)} mutants killed in {args.again}; running the other ones", flush=True)
        todo = [m for m in todo if m not in done]
    took = baseline(args.work, sorted({m.group for m in todo}))
    started = dt.datetime.now(dt.UTC)
    for n, m in enumerate(todo, 1):
        test_args = TARGETS[m.group][1]
        original = (args.work / m.file).read_text()
        (args.work / m.file).write_text(mutated_source(m, original))
        try:
            limit = args.timeout or max(300.0, 5 * took[m.group])
            status, m.seconds, m.failed = run_tests(args.work, test_args, limit)
        finally:
            (args.work / m.file).write_text(original)
        m.status = {"failed": "killed", "passed": "survived"}.get(status, status)
        print(f"[{n}/{len(todo)}] {m.status:8} {m.id} {m.change}  ({m.seconds:.0f} s)", flush=True)
    report(sorted(done + todo, key=lambda m: (m.file, m.line, m.id)), started, args.json)


def _key(m: dict[str, object]) -> tuple[object, ...]:
    """What identifies a mutant across runs even when other lines of its file moved."""
    return (m["file"], m["function"], m["source"], m["change"], str(m["id"]).split(":", 2)[2])


def report(done: list[Mutant], started: dt.datetime, path: Path) -> None:
    """Totals per group and every survivor; the JSON for docs/mutation.md."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"started": started.isoformat(), "mutants": [asdict(m) for m in done]}, indent=1)
    )
    head = ("group", "mutants", "killed", "timeout", "survived", "killed %")
    print("\n{:15} {:>8} {:>7} {:>8} {:>9} {:>9}".format(*head))
    for group in [*TARGETS, "all"]:
        ms = [m for m in done if group in {"all", m.group}]
        if not ms:
            continue
        killed = sum(m.status == "killed" for m in ms)
        timeout = sum(m.status == "timeout" for m in ms)
        share = 100 * (killed + timeout) / len(ms)
        left = len(ms) - killed - timeout
        print(f"{group:15} {len(ms):8} {killed:7} {timeout:8} {left:9} {share:8.1f}%")
    survivors = [m for m in done if m.status == "survived"]
    if survivors:
        print("\nsurvivors:")
        for m in survivors:
            print(f"  {m.id:45} {m.change:18} {m.function}: {m.source}")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
