"""Versioning a task body: ``ctx.patched`` and ``ctx.deprecate_patch``.

As Temporal's ``patched`` and DBOS's ``patch``. An execution that reaches a patch
point for the first time journals a marker (kind ``patch``, named by the change id)
and takes the new branch. An invocation that passed that point before the change was
deployed has another operation journaled there: it takes the old branch, and the
entry stays where it is for the old branch's own operation to replay. So a deploy
can change a body without pausing every invocation in flight.

``deprecate_patch`` is the step before removing a patch point: it journals nothing,
and steps over a marker that an execution of the patched code journaled.
"""

from __future__ import annotations

from celery_durable.engine.execution import Execution, checked_name

KIND = "patch"


def patched(ex: Execution, change_id: str) -> bool:
    """Whether this invocation takes the branch of ``change_id``; see ``DurableContext``."""
    checked_name(change_id, "patched")
    index = ex.position
    if index < len(ex.entries):
        entry = ex.entry(index)
        if entry["k"] == KIND and entry["n"] == change_id:
            ex.advance(index)
            return True
        return False  # it passed this point before the change: leave the entry in place
    ex.record(KIND, change_id, "true")
    return True


def deprecate_patch(ex: Execution, change_id: str) -> None:
    """Step over the marker of ``change_id`` if the journal has it here; journal nothing."""
    checked_name(change_id, "deprecate_patch")
    index = ex.position
    if index < len(ex.entries):
        entry = ex.entry(index)
        if entry["k"] == KIND and entry["n"] == change_id:
            ex.advance(index)
