"""``python -m tests.mutation``: turn each guard of the Lua scripts off, one at a time, and
run the store contract (``tests/contract``, the Redis store's half) against it.

Every ``if`` of ``celery_durable/stores/redis/lua/*.lua`` whose block returns (a fence,
status or existence check, a first-writer-wins answer; ``guards.py``) is turned off by
replacing its condition with ``false``. The mutant scripts are patched into the store's
``Script`` objects in this process (a new source, so a new SHA, which Redis loads at its
first ``NOSCRIPT``), and the contract suite runs in process, stopping at its first
failure: the mutant is killed. A mutant that passes the whole suite survives: no test
would notice if that check stopped holding. Prints a table of ``script:line`` -> killed
(by which test) or SURVIVED, and exits 1 if any survived.

Needs the Redis that ``tests/contract`` uses (``127.0.0.1:6379``); every test keeps to
its own key prefix. Options: ``--only NAME`` (a script's name, repeatable) and ``-v``
(pytest's output for survivors).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from celery_durable.stores.redis import scripts
from tests.mutation.guards import Guard, find_guards

ROOT = Path(__file__).resolve().parents[2]
LUA = resources.files("celery_durable.stores.redis").joinpath("lua")
#: The prelude that scripts.py prepends to the scripts that check a fence.
PRELUDE = "_fenced"
#: The contract suite, the Redis store's half, stopping at the first failure. A mutant
#: may make a script loop or wait: a test that hangs counts as a failure after this.
PYTEST_ARGS = [
    str(ROOT / "tests" / "contract"), "-x", "-q", "-k", "redis and not acl", "-n", "0",
    "-p", "no:cacheprovider",
    "-o", "timeout=30", "-W", "ignore::pytest.PytestAssertRewriteWarning",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Mutant:
    file: str
    guard: Guard

    @property
    def where(self) -> str:
        return f"{self.file}.lua:{self.guard.line}"


class _FirstFailure:
    """A pytest plugin that notes the first test that failed, and counts those that ran."""

    def __init__(self) -> None:
        self.failed: str | None = None
        self.ran = 0

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or report.failed:
            self.ran += report.when == "call"
            if report.failed and self.failed is None:
                self.failed = report.nodeid.rpartition("::")[2]

    def pytest_collection_modifyitems(self, items: list[Any]) -> None:
        # Tests that killed a mutant before are the likeliest to kill the next: first.
        items.sort(key=lambda item: _KILLERS.get(item.nodeid, 0), reverse=True)

    def pytest_runtest_makereport(self, item: Any, call: Any) -> None:
        if call.when == "call" and call.excinfo is not None:
            _KILLERS[item.nodeid] = _KILLERS.get(item.nodeid, 0) + 1


_KILLERS: dict[str, int] = {}


def _text(name: str) -> str:
    return LUA.joinpath(f"{name}.lua").read_text()


def mutants(only: list[str]) -> list[Mutant]:
    """Every guard of every script (and of the prelude), as a mutant to try."""
    names = sorted(path.name[:-4] for path in LUA.iterdir() if path.name.endswith(".lua"))
    known = {script.name for script in scripts.ALL} | {PRELUDE}
    unknown = sorted(set(names) - known)
    if unknown:
        raise SystemExit(f"lua/ has scripts that scripts.ALL does not load: {unknown}")
    chosen = [name for name in names if not only or name in only]
    return [Mutant(name, guard) for name in chosen for guard in find_guards(_text(name))]


@contextlib.contextmanager
def patched(mutant: Mutant) -> Iterator[None]:
    """The store's scripts with ``mutant``'s guard turned off, for the time of the block."""
    prelude = _text(PRELUDE)
    saved = [(script, script.source, script.sha) for script in scripts.ALL]
    try:
        for script in scripts.ALL:
            fenced = script.source.startswith(prelude)
            head = prelude if fenced else ""
            body = _text(script.name)
            if mutant.file == PRELUDE and fenced:
                head = mutant.guard.turned_off(prelude)
            elif mutant.file == script.name:
                body = mutant.guard.turned_off(body)
            else:
                continue
            script.source = head + body
            script.sha = hashlib.sha1(script.source.encode()).hexdigest()
        yield
    finally:
        for script, source, sha in saved:
            script.source, script.sha = source, sha


def run_contract() -> tuple[int, _FirstFailure, str]:
    """Run the contract suite in this process: pytest's exit code, what failed, its output."""
    recorder = _FirstFailure()
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = pytest.main(PYTEST_ARGS, plugins=[recorder])
    return int(code), recorder, output.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__)
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="only this script's guards (e.g. append); repeatable")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="show survivors' output")
    args = parser.parse_args(argv)
    began = time.monotonic()

    code, recorder, output = run_contract()
    if code != 0:
        print(output)
        print("The contract suite fails without any mutation: fix that first.")
        return 2
    print(f"tests/contract (Redis store) passes unmutated: {recorder.ran} tests.")

    rows: list[tuple[str, str, str]] = []
    survivors = 0
    for mutant in mutants(args.only):
        with patched(mutant):
            code, recorder, output = run_contract()
        if code == pytest.ExitCode.TESTS_FAILED:
            verdict = f"killed by {recorder.failed}"
        elif code == pytest.ExitCode.OK:
            survivors += 1
            verdict = f"SURVIVED ({recorder.ran} tests passed)"
            if args.verbose:
                print(output)
        else:
            print(output)
            raise SystemExit(f"pytest stopped with exit code {code} on {mutant.where}")
        rows.append((mutant.where, mutant.guard.condition, verdict))
        print(f"{mutant.where:<20} {verdict}", file=sys.stderr, flush=True)

    width = max(len(where) for where, _, _ in rows)
    print()
    print(f"| {'guard':<{width}} | condition turned off | verdict |")
    print(f"|{'-' * (width + 2)}|---|---|")
    for where, condition, verdict in rows:
        shown = condition if len(condition) <= 60 else condition[:57] + "..."
        print(f"| {where:<{width}} | `{shown}` | {verdict} |")
    print()
    took = time.monotonic() - began
    killed = len(rows) - survivors
    print(f"{len(rows)} guards, {killed} killed, {survivors} survived, in {took:.0f} s.")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
