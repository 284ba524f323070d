"""A corrupted journal entry pauses its invocation, and `ls`/`show` still show everything."""

from __future__ import annotations

import json

import pytest

from tests.hardening import harness
from tests.hardening.world import World

pytestmark = pytest.mark.system

TIMEOUT = 60


def test_a_corrupted_entry_pauses_its_invocation_and_ls_and_show_still_work(
    world: World,
) -> None:
    world.start_worker()
    healthy = world.new_id()
    assert world.send(harness.ECHO, "fine", task_id=healthy).get(timeout=TIMEOUT) == "fine"
    task_id = world.new_id()
    world.send(harness.TOUR, "o-1", 3.0, task_id=task_id)
    suspended = world.wait_status(task_id, "suspended")
    assert [s.name for s in suspended.steps] == ["reserve", "quote", "cool-off"]

    # Corrupted (or written by hand) while the invocation sleeps.
    journal = world.invocation_keys(task_id).journal
    world.journal.lset(journal, 0, '{"k":"run","n":"reserve"')
    before = world.journal.lrange(journal, 0, -1)

    paused = world.wait_status(task_id, "paused")  # woken by its timer, it replays
    assert paused.paused_reason is not None
    assert "journal entry 0 is unreadable (it is not JSON" in paused.paused_reason
    assert f"durable resume {task_id}" in paused.paused_reason
    assert world.journal.lrange(journal, 0, -1) == before  # nothing ran in its place
    assert world.journal.ttl(world.invocation_keys(task_id).meta) == -1  # not to expire

    listed = world.cli("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    found = {inv["id"]: inv for inv in json.loads(listed.stdout)}
    assert found[healthy]["status"] == "completed"
    assert found[task_id]["status"] == "paused"
    assert found[task_id]["steps"][0]["status"] == "unreadable"

    table = world.cli("ls")
    assert table.returncode == 0, table.stderr
    assert task_id in table.stdout and healthy in table.stdout
    shown = world.cli("show", task_id)
    assert shown.returncode == 0, shown.stderr
    assert "unreadable" in shown.stdout
    assert "journal entry 0 is unreadable" in shown.stdout
