"""A journal entry or completion that is not what celery-durable writes pauses the
invocation, naming what is wrong; nothing runs in its place, and reading it never fails."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from celery_durable import invocation
from celery_durable.codec import JsonCodec
from celery_durable.context import DurableContext
from celery_durable.engine.execution import Execution
from celery_durable.errors import Suspended, UnreadableJournalError
from celery_durable.fingerprint import fingerprint
from celery_durable.journal.records import parse_invocation
from celery_durable.journal.store import StartRequest
from celery_durable.policy import RetryPolicy
from celery_durable.stores.memory import MemoryJournalStore

CODEC = JsonCodec[Any]()
Body = Callable[[DurableContext], Any]


def execute(store: MemoryJournalStore, body: Body) -> Any:
    request = StartRequest("shop.checkout", fingerprint((), {}), 7, 0.0, "test:1")
    started = invocation.begin(store, "inv-1", request, CODEC, RetryPolicy(), retention=60)
    assert isinstance(started, Execution), started
    try:
        value = body(DurableContext(started))
    finally:
        started.close()
    return invocation.complete(store, started, value, CODEC, retention=60)


class Stop(BaseException):
    """Ends the first execution after it journaled, as a dead worker would."""


def steps(ctx: DurableContext, ran: Counter[str]) -> Any:
    a = ctx.run("a", lambda: ran.update(["a"]) or {"n": 1})
    ctx.sleep(0, "nap")
    both = ctx.all(ctx.timer(0, "x"), ctx.timer(0, "y")).result()
    b = ctx.run("b", lambda: ran.update(["b"]) or 2)
    if not ran["stop"]:
        ran["stop"] += 1
        raise Stop
    ran["after"] += 1
    return [a, both, b]


@pytest.mark.parametrize(
    ("index", "stored", "what"),
    [
        (0, "not json", "it is not JSON (at character 0): 'not json'"),
        (0, "", "it is not JSON (at character 0)"),
        (0, '{"k":"run","n":"a","t":0,"d":0,"s":"ok","v":1}}', "it has text after its JSON"),
        (0, '{"k":"run"}', "it has no 'n' field"),
        (0, '{"k":"run","n":"a","t":0,"d":0,"s":"ok"}', "it says 'ok' but holds no value"),
        (0, '{"k":"run","n":"a","t":0,"d":0,"a":0,"s":"ok","v":1}', "its attempts ('a') are 0"),
        (0, '{"k":"run","n":"a","t":"0","d":0,"s":"ok","v":1}', "its 't' is '0', not int or float"),
        (
            0,
            '{"k":"run","n":"a","t":0,"d":0,"s":"ok","v":{"__type__":"nope","__value__":1}}',
            "its value does not decode with codec",
        ),
        (1, '{"k":"sleep","n":"nap","t":0,"d":0,"s":"ok","v":{}}', "it has no 'until' field"),
        (1, '{"k":"sleep","n":"nap","t":0,"d":0,"s":"ok","v":7}', "holds 7, not an object"),
        (4, '{"k":"all","n":"all","t":0,"d":0,"s":"ok","v":{"c":0,"f":5}}', "names future 5"),
        (4, '{"k":"all","n":"all","t":0,"d":0,"s":"ok","v":{"c":0,"f":"x"}}', "not int or null"),
    ],
)
def test_an_unreadable_entry_pauses_the_invocation_and_names_it(
    index: int, stored: str, what: str
) -> None:
    store = MemoryJournalStore()
    ran: Counter[str] = Counter()
    with pytest.raises(Stop):
        execute(store, lambda ctx: steps(ctx, ran))
    journal = store.journals["inv-1"]
    journal[index] = stored
    before = list(journal)

    with pytest.raises(UnreadableJournalError) as caught:
        execute(store, lambda ctx: steps(ctx, ran))
    message = str(caught.value)
    assert f"its journal entry {index} is unreadable" in message
    assert what in message
    assert "durable resume inv-1" in message
    meta = store.meta["inv-1"]
    assert (meta["status"], meta["paused_reason"]) == ("paused", message)
    assert "inv-1" not in store.expires_at  # paused: kept until an operator acts
    assert store.journals["inv-1"] == before  # nothing written, nothing lost
    assert (ran["a"], ran["b"], ran["after"]) == (1, 1, 0)  # nothing ran in its place

    # `show` reads it too: an entry of the wrong shape as an unreadable step, and one
    # whose meaning only replay can check as it is stored.
    inv = parse_invocation("inv-1", *store.read("inv-1"))  # type: ignore[misc]
    shown = inv.steps[index]
    if what.startswith(("its value does not decode", "names future")):
        assert shown.status == "completed"
    else:
        assert shown.status == "unreadable"
        assert shown.error is not None and what in shown.error["message"]


def test_an_unreadable_outcome_from_outside_pauses_the_invocation_and_names_it() -> None:
    store = MemoryJournalStore()

    def body(ctx: DurableContext) -> Any:
        _, approval = ctx.awakeable("approval")
        return approval.result()

    with pytest.raises(Suspended):
        execute(store, body)
    store.done["inv-1"]["0"] = "not json"  # as written by someone who is not us
    with pytest.raises(UnreadableJournalError) as caught:
        execute(store, body)
    assert "its outcome of awakeable 'approval' (journal index 0) is unreadable" in str(
        caught.value
    )
    assert store.meta["inv-1"]["status"] == "paused"

    inv = parse_invocation("inv-1", *store.read("inv-1"))  # type: ignore[misc]
    assert inv.steps[0].status == "unreadable"


def test_a_body_that_swallows_the_error_cannot_fail_the_paused_invocation() -> None:
    store = MemoryJournalStore()
    ran: Counter[str] = Counter()

    def body(ctx: DurableContext) -> Any:
        try:
            return ctx.run("a", lambda: ran.update(["a"]) or 1)
        except UnreadableJournalError:
            raise RuntimeError("swallowed") from None

    execute(store, body)
    store.meta["inv-1"].update(status="running")  # as if it had not finished
    store.meta["inv-1"].pop("outcome")
    store.expires_at.pop("inv-1")
    store.journals["inv-1"][0] = "{"
    started = invocation.begin(
        store, "inv-1", StartRequest("shop.checkout", fingerprint((), {}), 7, 0.0, "t:2"),
        CODEC, RetryPolicy(), retention=60,
    )  # fmt: skip
    assert isinstance(started, Execution)
    with pytest.raises(RuntimeError):
        body(DurableContext(started))
    with pytest.raises(UnreadableJournalError):  # what DurableTask does with the failure
        invocation.fail(store, started, RuntimeError("swallowed"), retention=60)
    assert store.meta["inv-1"]["status"] == "paused"


@pytest.mark.parametrize(
    ("field", "stored"),
    [
        ("outcome", "not json"),
        ("outcome", '{"s":"maybe"}'),
        ("attempt", "{"),
        ("attempt", '{"i":"x","a":[],"e":"boom"}'),
        ("awaiting", "[1, 2, {"),
        ("awaiting", '[1, "x", {"kind": "sleep"}]'),
        ("created_at", "yesterday"),
        ("seed", "many"),
    ],
)
def test_an_unreadable_field_of_an_invocation_never_breaks_reading_it(
    field: str, stored: str
) -> None:
    store = MemoryJournalStore()
    execute(store, lambda ctx: ctx.run("a", lambda: 1))
    store.meta["inv-1"][field] = stored
    inv = parse_invocation("inv-1", *store.read("inv-1"))  # type: ignore[misc]
    assert inv.as_dict()["id"] == "inv-1"
    if field == "outcome":
        assert inv.error is not None
        assert inv.error["message"].startswith("its stored outcome is unreadable")
