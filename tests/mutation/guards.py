"""Finding the guards of a Lua script, and turning one off.

A guard is a clause of an ``if`` (or ``elseif``) whose own block returns: a fence, status
or existence check that refuses, a first-writer-wins answer, an early "ready". Turning
it off replaces its condition with ``false``, so the script goes on as if the check had
passed. Found by reading the Lua (comments and strings skipped, blocks matched), not
from a list kept by hand, so a guard added to a script is checked from then on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
    (?P<long_comment>--\[(?P<lc_eq>=*)\[.*?\](?P=lc_eq)\])
  | (?P<comment>--[^\n]*)
  | (?P<long_string>\[(?P<ls_eq>=*)\[.*?\](?P=ls_eq)\])
  | (?P<string>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<space>\s+)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Guard:
    """An ``if``/``elseif`` clause whose block returns."""

    line: int
    """The line of its ``if`` or ``elseif`` (1-based)."""
    start: int
    end: int
    """Where its condition is in the text (between the keyword and ``then``)."""
    condition: str

    def turned_off(self, text: str) -> str:
        """``text`` with this guard's condition replaced by ``false``; line numbers kept."""
        newlines = text.count("\n", self.start, self.end)
        return text[: self.start] + " false " + "\n" * newlines + text[self.end :]


@dataclass
class _Clause:
    line: int
    start: int
    end: int = -1
    returns: bool = False


@dataclass
class _Block:
    kind: str
    clause: _Clause | None = None
    """The ``if`` clause whose block this is now (None in an ``else``, or not an ``if``)."""
    loop_header: bool = False
    """A ``for``/``while`` whose ``do`` has not come yet."""


def find_guards(text: str) -> list[Guard]:
    """Every guard of the Lua source ``text``, in order."""
    guards: list[Guard] = []
    stack: list[_Block] = []
    open_conditions: list[_Clause] = []  # clauses whose ``then`` has not come yet

    def close(block: _Block) -> None:
        if block.clause is not None and block.clause.returns:
            clause = block.clause
            condition = " ".join(text[clause.start : clause.end].split())
            guards.append(Guard(clause.line, clause.start, clause.end, condition))
        block.clause = None

    for match in _TOKEN.finditer(text):
        word = match.group("word")
        if word is None:
            continue
        line = text.count("\n", 0, match.start()) + 1
        top = stack[-1] if stack else None
        if word == "if":
            clause = _Clause(line, match.end())
            stack.append(_Block("if"))
            open_conditions.append(clause)
        elif word == "elseif" and top is not None and top.kind == "if":
            close(top)
            open_conditions.append(_Clause(line, match.end()))
        elif word == "then" and open_conditions and top is not None and top.kind == "if":
            clause = open_conditions.pop()
            clause.end = match.start()
            top.clause = clause
        elif word == "else" and top is not None and top.kind == "if":
            close(top)
        elif word in ("for", "while"):
            stack.append(_Block(word, loop_header=True))
        elif word == "do":
            if top is not None and top.loop_header:
                top.loop_header = False
            else:
                stack.append(_Block("do"))
        elif word in ("function", "repeat"):
            stack.append(_Block(word))
        elif word in ("end", "until") and stack:
            close(stack.pop())
        elif word == "return" and top is not None and top.clause is not None:
            top.clause.returns = True
    if stack:
        raise ValueError(f"unbalanced Lua: {len(stack)} block(s) left open")
    return sorted(guards, key=lambda guard: guard.start)
