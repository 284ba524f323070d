"""The guard finder of ``python -m tests.mutation``: which ``if`` clauses it turns off."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mutation.guards import find_guards

LUA = Path(__file__).resolve().parents[2] / "celery_durable" / "stores" / "redis" / "lua"

SCRIPT = """\
-- if a comment says "if x then return end", it is no guard
local function fenced(stored)
  if not stored then
    return redis.error_reply('GONE end if then')
  end
  return 1
end
local f = redis.call('HMGET', KEYS[1], 'fence', 'status')
if f[1] ~= ARGV[1]
    or f[2] == "end" then
  return fenced(f[1])
elseif f[2] ~= 'running' then
  return 'stopped'
else
  return 'never a guard: an else has no condition'
end
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[2])  -- no return here: not a guard
  if ARGV[3] then
    return 0
  end
end
for i = 1, 3 do
  if redis.call('EXISTS', KEYS[i]) == 0 then return i end
end
while false do end
--[[ if long then return end ]]
local s = [[ if long then return end ]]
return 0
"""


def test_the_guards_are_the_if_clauses_whose_own_block_returns() -> None:
    found = [(g.line, g.condition) for g in find_guards(SCRIPT)]
    assert found == [
        (3, "not stored"),
        (9, """f[1] ~= ARGV[1] or f[2] == "end\""""),
        (12, "f[2] ~= 'running'"),
        (19, "ARGV[3]"),
        (24, "redis.call('EXISTS', KEYS[i]) == 0"),
    ]


def test_turning_a_guard_off_keeps_every_line_where_it_was() -> None:
    guard = find_guards(SCRIPT)[1]
    mutant = guard.turned_off(SCRIPT)
    assert mutant.count("\n") == SCRIPT.count("\n")
    assert "\nif false \nthen\n  return fenced(f[1])\n" in mutant
    assert [g.line for g in find_guards(mutant)] == [3, 9, 12, 19, 24]


def test_unbalanced_lua_is_refused() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        find_guards("if x then return 1")


def test_every_script_has_its_refusals_found() -> None:
    # The checks that refuse a stale, late or missing writer are among the guards found.
    found = {
        f"{path.stem}: {g.condition}"
        for path in LUA.glob("*.lua")
        for g in find_guards(path.read_text())
    }
    for expected in (
        "_fenced: not stored",
        "append: f[1] ~= ARGV[1]",
        "append: f[2] ~= 'running'",
        "sent: f[1] ~= ARGV[1]",
        "suspend: f[1] ~= ARGV[2]",
        "finish: not prior[1]",
        "start: status == 'paused' and not f[15]",
    ):
        assert expected in found
