"""Celery compatibility: the same case, once on plain tasks and once on DurableTask tasks.

Every case sends a canvas built from tasks of one variant (``plain.*`` or ``durable.*``,
see ``bodies``), waits for it, and writes down what a Celery user can observe: what
``get()`` returned or raised, the state of every result in the result graph, which
callbacks and errbacks ran and what they got, and the ``task_success``,
``task_failure`` and ``task_retry`` signals of the tasks under test. The plain variant
must show what Celery documents (the case's ``expect``: this proves the case itself
against a real worker); the durable variant must show exactly what the plain one did.

Both variants of a case are sent before either is awaited, so they run side by side.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery import chain, chord, group
from celery.canvas import chunks, xmap
from celery.exceptions import Reject, TaskRevokedError
from celery.result import ResultBase
from kombu.exceptions import EncodeError

from celery_durable import get_invocation
from tests.compat.bodies import sample
from tests.compat.harness import VARIANTS, CompatError, typed
from tests.compat.world import Run, World, error, observe, sort_records, value

pytestmark = pytest.mark.compat

PENDING, SUCCESS, FAILURE, REVOKED = "PENDING", "SUCCESS", "FAILURE", "REVOKED"


@dataclass(frozen=True)
class Case:
    id: str
    send: Callable[[Run], ResultBase]
    #: What the plain variant must show: a subset of the outcome's keys.
    expect: dict[str, Any]
    #: Seconds to wait for ``get()``.
    timeout: float = 15.0
    #: More things to observe: (run, result, when it was sent) -> more outcome keys.
    extra: Callable[[Run, ResultBase, datetime.datetime], dict[str, Any]] | None = None
    #: Whether the durable variant's error messages must be the plain one's word for
    #: word; if not, the types, states and records must still be the same.
    same_messages: bool = True


# -- Expected records ------------------------------------------------------------------


def success(task: str, result: Any) -> dict[str, Any]:
    return {"signal": "success", "task": task, "result": typed(result)}


def failure(task: str, kind: str, message: str) -> dict[str, Any]:
    return {"signal": "failure", "task": task, "exc": {"is": [kind], "message": message}}


def retry(task: str, kind: str | None = None, message: str = "") -> dict[str, Any]:
    exc = None if kind is None else {"is": [kind], "message": message}
    return {"signal": "retry", "task": task, "exc": exc}


def called(label: str, result: Any) -> dict[str, Any]:
    return {"cb": label, "value": typed(result)}


def errback_new(label: str, task: str, task_id: str, kind: str, message: str) -> dict[str, Any]:
    return {
        "cb": label,
        "task": task,
        "task_id": task_id,
        "exc": {"is": [kind], "message": message},
    }


def errback_old(
    label: str, task_id: str, state: str, stored: str, stored_type: str
) -> dict[str, Any]:
    return {
        "cb": label,
        "task_id": task_id,
        "state": state,
        "stored": stored,
        "stored_type": stored_type,
    }


def sorted_records(*records: dict[str, Any]) -> list[dict[str, Any]]:
    return sort_records(list(records))


# -- Cases -----------------------------------------------------------------------------

CASES: list[Case] = []


def case(
    expect: dict[str, Any],
    timeout: float = 15.0,
    extra: Callable[[Run, ResultBase, datetime.datetime], dict[str, Any]] | None = None,
    id: str | None = None,
    same_messages: bool = True,
) -> Callable[[Callable[[Run], ResultBase]], Callable[[Run], ResultBase]]:
    def register(send: Callable[[Run], ResultBase]) -> Callable[[Run], ResultBase]:
        name = id or send.__name__.removeprefix("case_").replace("_", "-")
        CASES.append(Case(name, send, expect, timeout, extra, same_messages))
        return send

    return register


# Chains


@case({"result": value(13), "states": {"result": SUCCESS, "result.parent": SUCCESS}})
def case_chain_of_two(r: Run) -> ResultBase:
    return (r.s("add", 1, 2) | r.s("add", 10)).apply_async()


@case({"result": value(26)})
def case_chain_of_three(r: Run) -> ResultBase:
    return chain(r.s("add", 1, 2), r.s("add", 10), r.s("mul", 2)).apply_async()


@case({"result": value(30)})
def case_chain_with_immutable_link(r: Run) -> ResultBase:
    return (r.s("add", 1, 2) | r.si("add", 5, 5) | r.s("mul", 3)).apply_async()


@case({"result": value(13)})
def case_chain_with_keyword_partial(r: Run) -> ResultBase:
    return (r.s("add", 1, 2) | r.s("add", y=10)).apply_async()


@case({"result": value(26), "callbacks": [called("done", 26)]})
def case_chain_with_link(r: Run) -> ResultBase:
    canvas = chain(r.s("add", 1, 2), r.s("add", 10), r.s("mul", 2))
    return canvas.apply_async(link=r.on_success("done"))


# Groups and chords


@case({"result": value([0, 2, 4, 6])})
def case_group(r: Run) -> ResultBase:
    return group(r.s("add", i, i) for i in range(4)).apply_async()


@case({"result": value([6, 12])})
def case_group_of_chains(r: Run) -> ResultBase:
    return group(
        r.s("add", 1, 1) | r.s("mul", 3),
        r.s("add", 2, 2) | r.s("mul", 3),
    ).apply_async()


@case({"result": value(12)})
def case_chord(r: Run) -> ResultBase:
    return chord((r.s("add", i, i) for i in range(4)), r.s("xsum")).apply_async()


@case({"result": value(60)})
def case_chord_with_chain_body(r: Run) -> ResultBase:
    return chord([r.s("add", 1, 1), r.s("add", 2, 2)], r.s("xsum") | r.s("mul", 10)).apply_async()


@case({"result": value(12)})
def case_nested_chords(r: Run) -> ResultBase:
    inner = chord([r.s("add", 1, 1), r.s("add", 2, 2)], r.s("xsum"))
    return chord([inner, r.s("add", 3, 3)], r.s("xsum")).apply_async()


@case({"result": value(42)})
def case_chain_of_groups_and_chords(r: Run) -> ResultBase:
    return chain(
        group(r.s("add", 1, 1), r.s("add", 2, 2)),
        r.s("xsum"),
        group(r.s("add", 10), r.s("add", 20)),
        r.s("xsum"),
    ).apply_async()


@case({"result": value(32)})
def case_group_inside_chain_then_task(r: Run) -> ResultBase:
    return chain(r.s("add", 1, 1), group(r.s("add", 10), r.s("mul", 10)), r.s("xsum")).apply_async()


@case({"result": value([3, 4])})
def case_chain_ending_in_group(r: Run) -> ResultBase:
    return (r.s("add", 1, 1) | group(r.s("add", 1), r.s("add", 2))).apply_async()


@case({"result": value(70)})
def case_chord_inside_chain(r: Run) -> ResultBase:
    return chain(
        r.s("add", 1, 1), chord([r.s("add", 1), r.s("add", 2)], r.s("xsum")), r.s("mul", 10)
    ).apply_async()


@case({"result": value([3, 7])})
def case_map(r: Run) -> ResultBase:
    # celery.map calls the task in its own process, as a function: a direct call.
    return xmap(r.s("xsum"), [[1, 2], [3, 4]], app=r.world.app).apply_async()


@case({"result": value([[0, 2], [4, 6]])})
def case_chunks(r: Run) -> ResultBase:
    return chunks(r.s("add"), [(i, i) for i in range(4)], 2, app=r.world.app).apply_async()


@case({"result": value(3)})
def case_keyword_arguments(r: Run) -> ResultBase:
    return r.s("add", x=1, y=2).apply_async()


@case({"result": value(None), "signals": [success("nothing", None)]})
def case_returns_none(r: Run) -> ResultBase:
    return r.s("nothing").apply_async()


# Errors in canvases


@case(
    {
        "result": error(ValueError, "bad input [3]"),
        # Celery stores the failure for the links that never ran, too.
        "states": {
            "result": FAILURE,
            "result.parent": FAILURE,
            "result.parent.parent": SUCCESS,
        },
        "signals": sorted_records(
            success("add", 3), failure("fail", "ValueError", "bad input [3]")
        ),
    }
)
def case_error_in_the_middle_of_a_chain(r: Run) -> ResultBase:
    return chain(r.s("add", 1, 2), r.s("fail"), r.s("add", 10)).apply_async()


@case({"result": error(ValueError, "bad input ['first']")})
def case_error_in_the_first_link(r: Run) -> ResultBase:
    return chain(r.s("fail", "first"), r.s("add", 10), r.s("add", 20)).apply_async()


@case({"result": error(ValueError, "bad input [13]")})
def case_error_in_the_last_link(r: Run) -> ResultBase:
    return chain(r.s("add", 1, 2), r.s("add", 10), r.s("fail")).apply_async()


@case(
    {
        "result": error(ValueError, "bad input [3]"),
        "callbacks": [
            errback_new("chain-errback", "fail", "result.parent", "ValueError", "bad input [3]")
        ],
    }
)
def case_chain_on_error_new_style(r: Run) -> ResultBase:
    canvas = chain(r.s("add", 1, 2), r.s("fail"), r.s("add", 10))
    return canvas.on_error(r.errback_new("chain-errback")).apply_async()


@case(
    {
        "result": error(ValueError, "bad input [3]"),
        "callbacks": [
            errback_old(
                "chain-errback",
                "result.parent",
                FAILURE,
                "ValueError('bad input [3]')",
                "builtins.ValueError",
            )
        ],
    }
)
def case_chain_on_error_old_style(r: Run) -> ResultBase:
    canvas = chain(r.s("add", 1, 2), r.s("fail"), r.s("add", 10))
    return canvas.on_error(r.errback_old("chain-errback")).apply_async()


@case({"result": error(ValueError, "bad input [3]"), "callbacks": []})
def case_chain_link_skipped_on_error(r: Run) -> ResultBase:
    canvas = chain(r.s("add", 1, 2), r.s("fail"), r.s("add", 10))
    return canvas.apply_async(link=r.on_success("done"))


_HEADER_FAILED = "Dependency <id> raised ValueError(\"bad input ['header']\")"


@case(
    {
        "result": error(ValueError, "bad input [3]"),
        "callbacks": [errback_new("eb", "fail", "result.parent", "ValueError", "bad input [3]")],
    }
)
def case_chain_link_error_option(r: Run) -> ResultBase:
    canvas = chain(r.s("add", 1, 2), r.s("fail"), r.s("add", 10))
    return canvas.apply_async(link_error=r.errback_new("eb"))


@case(
    {
        "result": error(ValueError, "bad input ['g']"),
        "callbacks": [errback_new("eb", "fail", "result[1]", "ValueError", "bad input ['g']")],
    }
)
def case_group_link_error(r: Run) -> ResultBase:
    canvas = group(r.s("add", 1, 1), r.s("fail", "g"))
    canvas.link_error(r.errback_new("eb"))  # on every task of the group
    return canvas.apply_async()


@case(
    {
        # The body is stored as failed with a ChordError; get() raises the header's error.
        "result": error(ValueError, "bad input ['header']"),
        "states": {
            "result": FAILURE,
            "result.parent[0]": SUCCESS,
            "result.parent[1]": FAILURE,
            "result.parent[2]": SUCCESS,
        },
    }
)
def case_chord_with_failing_header_task(r: Run) -> ResultBase:
    header = [r.s("add", 1, 1), r.s("fail", "header"), r.s("add", 2, 2)]
    return chord(header, r.s("xsum")).apply_async()


@case(
    {
        "result": error(ValueError, "bad input ['header']"),
        # The chord's errbacks are the body's: they get the body's id and a ChordError.
        "callbacks": sorted_records(
            errback_new("chord-new", "xsum", "result", "ChordError", _HEADER_FAILED),
            errback_old(
                "chord-old",
                "result",
                FAILURE,
                f"ChordError({_HEADER_FAILED!r})",
                "celery.exceptions.ChordError",
            ),
        ),
    }
)
def case_chord_with_failing_header_and_errback(r: Run) -> ResultBase:
    header = [r.s("add", 1, 1), r.s("fail", "header")]
    errbacks = [r.errback_new("chord-new"), r.errback_old("chord-old")]
    return chord(header, r.s("xsum")).apply_async(link_error=errbacks)


@case({"result": error(ValueError, "bad input [[2, 4]]")})
def case_chord_with_failing_body(r: Run) -> ResultBase:
    return chord([r.s("add", 1, 1), r.s("add", 2, 2)], r.s("fail")).apply_async()


@case(
    {
        "result": error(ValueError, "bad input ['g']"),
        "states": {"result[0]": SUCCESS, "result[1]": FAILURE, "result[2]": SUCCESS},
    }
)
def case_group_with_failing_task(r: Run) -> ResultBase:
    return group(r.s("add", 1, 1), r.s("fail", "g"), r.s("add", 2, 2)).apply_async()


# link and link_error


@case({"result": value(4), "callbacks": [called("cb", 4)]})
def case_link(r: Run) -> ResultBase:
    return r.s("add", 2, 2).apply_async(link=r.on_success("cb"))


@case({"result": value(4), "callbacks": sorted_records(called("cb1", 4), called("cb2", 4))})
def case_link_two_callbacks(r: Run) -> ResultBase:
    return r.s("add", 2, 2).apply_async(link=[r.on_success("cb1"), r.on_success("cb2")])


@case(
    {
        "result": error(ValueError, "bad input ['x']"),
        "callbacks": [errback_new("eb", "fail", "result", "ValueError", "bad input ['x']")],
    }
)
def case_link_error_new_style(r: Run) -> ResultBase:
    return r.s("fail", "x").apply_async(link_error=r.errback_new("eb"))


@case(
    {
        "result": error(ValueError, "bad input ['x']"),
        "callbacks": [
            errback_old(
                "eb", "result", FAILURE, "ValueError(\"bad input ['x']\")", "builtins.ValueError"
            )
        ],
    }
)
def case_link_error_old_style(r: Run) -> ResultBase:
    return r.s("fail", "x").apply_async(link_error=r.errback_old("eb"))


@case(
    {
        "result": error(ValueError, "bad input ['x']"),
        "callbacks": sorted_records(
            errback_new("new", "fail", "result", "ValueError", "bad input ['x']"),
            errback_old(
                "old", "result", FAILURE, "ValueError(\"bad input ['x']\")", "builtins.ValueError"
            ),
        ),
    }
)
def case_link_error_old_and_new_style(r: Run) -> ResultBase:
    errbacks = [r.errback_new("new"), r.errback_old("old")]
    return r.s("fail", "x").apply_async(link=r.on_success("cb"), link_error=errbacks)


@case({"result": value(4), "callbacks": [called("cb", 4)]})
def case_link_error_not_called_on_success(r: Run) -> ResultBase:
    return r.s("add", 2, 2).apply_async(
        link=r.on_success("cb"), link_error=[r.errback_new("new"), r.errback_old("old")]
    )


# A step raising ValueError fails the task at once, as a plain task's body would


@case(
    {
        "result": error(ValueError, "bad input ['boom']"),
        "states": {"result": FAILURE},
        "signals": [failure("fail", "ValueError", "bad input ['boom']")],
        "callbacks": [errback_new("eb", "fail", "result", "ValueError", "bad input ['boom']")],
    }
)
def case_value_error_fails_at_once(r: Run) -> ResultBase:
    return r.s("fail", "boom").apply_async(link_error=r.errback_new("eb"))


@case(
    {
        "result": error(ValueError, "bad input ['boom']"),
        "states": {"result": FAILURE},
        "signals": [failure("fail_autoretry", "ValueError", "bad input ['boom']")],
    }
)
def case_value_error_not_in_autoretry_for(r: Run) -> ResultBase:
    return r.s("fail_autoretry", "boom").apply_async()


@case(
    {
        "result": error(KeyError, "'missing-key'"),
        "signals": [failure("fail_as", "KeyError", "'missing-key'")],
    }
)
def case_key_error(r: Run) -> ResultBase:
    return r.s("fail_as", "key").apply_async()


@case(
    {
        "result": error(ValueError, "('two args', 2)"),
        "signals": [failure("fail_as", "ValueError", "('two args', 2)")],
    }
)
def case_error_with_two_args(r: Run) -> ResultBase:
    return r.s("fail_as", "multi").apply_async()


@case(
    {
        "result": error(CompatError, "a failure of the project's own"),
        "signals": [failure("fail_as", "CompatError", "a failure of the project's own")],
    }
)
def case_error_of_the_projects_own_type(r: Run) -> ResultBase:
    return r.s("fail_as", "custom").apply_async()


@case({"result": error(RuntimeError, "a runtime error")})
def case_runtime_error(r: Run) -> ResultBase:
    return r.s("fail_as", "runtime").apply_async()


@case(
    {
        "result": error(ValueError, "body failed after 2"),
        "states": {"result": FAILURE},
        "signals": [failure("fail_in_body", "ValueError", "body failed after 2")],
    }
)
def case_error_raised_by_the_body_after_a_step(r: Run) -> ResultBase:
    return r.s("fail_in_body", 1).apply_async()


def _postruns(r: Run, result: ResultBase, sent: datetime.datetime) -> dict[str, Any]:
    return {"postruns": [(p["task"], p["state"]) for p in r.postruns()]}


@case(
    {
        "result": ["timeout", "no outcome in 2s; state PENDING"],
        "states": {"result": PENDING},
        "postruns": [("ignore_in_step", "IGNORED")],
        "signals": [],
    },
    timeout=2,
    extra=_postruns,
)
def case_ignore_raised_inside_a_step(r: Run) -> ResultBase:
    return r.s("ignore_in_step").apply_async()


@case(
    {
        "result": error(Reject, "('rejected from a step', False)"),
        "states": {"result": FAILURE},
        "postruns": [("reject_in_step", "REJECTED")],
    },
    timeout=2,
    extra=_postruns,
)
def case_reject_raised_inside_a_step(r: Run) -> ResultBase:
    return r.s("reject_in_step").apply_async()


# autoretry_for


@case(
    {
        "result": value("connected on attempt 3"),
        "states": {"result": SUCCESS},
        "signals": sorted_records(
            retry("flaky", "ConnectionError", "attempt 1 refused"),
            retry("flaky", "ConnectionError", "attempt 2 refused"),
            success("flaky", "connected on attempt 3"),
        ),
    }
)
def case_autoretry_recovers(r: Run) -> ResultBase:
    return r.s("flaky", 2).apply_async()


@case(
    {
        "result": error(ConnectionError, "attempt 3 refused"),
        "states": {"result": FAILURE},
        "signals": sorted_records(
            retry("flaky", "ConnectionError", "attempt 1 refused"),
            retry("flaky", "ConnectionError", "attempt 2 refused"),
            failure("flaky", "ConnectionError", "attempt 3 refused"),
        ),
    }
)
def case_autoretry_exhausted(r: Run) -> ResultBase:
    return r.s("flaky", 99).apply_async()


@case(
    {
        "result": value("connected on attempt 3"),
        "signals": sorted_records(
            retry("flaky_retry_kwargs", "ConnectionError", "attempt 1 refused"),
            retry("flaky_retry_kwargs", "ConnectionError", "attempt 2 refused"),
            success("flaky_retry_kwargs", "connected on attempt 3"),
        ),
    }
)
def case_autoretry_retry_kwargs_recovers(r: Run) -> ResultBase:
    return r.s("flaky_retry_kwargs", 2).apply_async()


@case(
    {
        "result": error(ConnectionError, "attempt 3 refused"),
        "signals": sorted_records(
            retry("flaky_retry_kwargs", "ConnectionError", "attempt 1 refused"),
            retry("flaky_retry_kwargs", "ConnectionError", "attempt 2 refused"),
            failure("flaky_retry_kwargs", "ConnectionError", "attempt 3 refused"),
        ),
    }
)
def case_autoretry_retry_kwargs_exhausted(r: Run) -> ResultBase:
    return r.s("flaky_retry_kwargs", 99).apply_async()


@case(
    {
        "result": error(ValueError, "bad input ['boom']"),
        "signals": sorted_records(
            retry("fail_autoretry_all", "ValueError", "bad input ['boom']"),
            retry("fail_autoretry_all", "ValueError", "bad input ['boom']"),
            failure("fail_autoretry_all", "ValueError", "bad input ['boom']"),
        ),
    }
)
def case_autoretry_for_exception_retries_a_value_error(r: Run) -> ResultBase:
    return r.s("fail_autoretry_all", "boom").apply_async()


@case(
    {
        "result": error(ValueError, "bad input ['boom']"),
        "signals": [failure("fail_dont_autoretry", "ValueError", "bad input ['boom']")],
    }
)
def case_dont_autoretry_for(r: Run) -> ResultBase:
    return r.s("fail_dont_autoretry", "boom").apply_async()


# self.retry from the body


@case(
    {
        "result": value("x=2 final=True"),
        "signals": sorted_records(
            retry("retry_with_args"), success("retry_with_args", "x=2 final=True")
        ),
    }
)
def case_retry_with_new_args(r: Run) -> ResultBase:
    return r.s("retry_with_args", 1).apply_async()


@case(
    {
        "result": value("x=2 final=True"),
        "signals": sorted_records(
            retry("retry_with_kwargs"), success("retry_with_kwargs", "x=2 final=True")
        ),
    }
)
def case_retry_with_new_kwargs(r: Run) -> ResultBase:
    return r.s("retry_with_kwargs", x=1).apply_async()


@case(
    {
        "result": value("done after 2 retries"),
        "signals": sorted_records(
            retry("retry_twice"),
            retry("retry_twice"),
            success("retry_twice", "done after 2 retries"),
        ),
    }
)
def case_retry_twice(r: Run) -> ResultBase:
    return r.s("retry_twice").apply_async()


@case(
    {
        "result": error(KeyError, "'still-missing'"),
        "states": {"result": FAILURE},
        "signals": sorted_records(
            retry("retry_exhausted", "KeyError", "'still-missing'"),
            failure("retry_exhausted", "KeyError", "'still-missing'"),
        ),
    }
)
def case_retry_exhausted_raises_its_exc(r: Run) -> ResultBase:
    return r.s("retry_exhausted").apply_async()


@case(
    {
        "result": value("decided after 1 retries"),
        "signals": sorted_records(
            retry("retry_in_step"), success("retry_in_step", "decided after 1 retries")
        ),
    }
)
def case_retry_raised_inside_a_step(r: Run) -> ResultBase:
    return r.s("retry_in_step").apply_async()


# Celery's retry idioms around a step: the step runs again (the durable variant re-opens
# its journal entry; test_retry_idioms counts what ran)


@case(
    {
        "result": value("fetched on attempt 2"),
        "states": {"result": SUCCESS},
        "signals": sorted_records(
            retry("fetch_retrying", "ConnectionError", "attempt 1 refused"),
            success("fetch_retrying", "fetched on attempt 2"),
        ),
    }
)
def case_retry_on_error_runs_the_step_again(r: Run) -> ResultBase:
    return r.s("fetch_retrying", 1).apply_async()


@case(
    {
        "result": error(ConnectionError, "attempt 4 refused"),
        "states": {"result": FAILURE},
        "signals": sorted_records(
            *(
                retry("fetch_retrying", "ConnectionError", f"attempt {n} refused")
                for n in (1, 2, 3)
            ),
            failure("fetch_retrying", "ConnectionError", "attempt 4 refused"),
        ),
    }
)
def case_retry_on_error_until_max_retries(r: Run) -> ResultBase:
    return r.s("fetch_retrying", 99).apply_async()


@case(
    {
        "result": value("done"),
        "signals": sorted_records(retry("poll"), retry("poll"), success("poll", "done")),
    }
)
def case_retry_to_poll_a_step(r: Run) -> ResultBase:
    return r.s("poll", 3).apply_async()


@case(
    {
        "result": value(["done", "fetched on attempt 2"]),
        "states": {"result": SUCCESS, "result.parent[0]": SUCCESS, "result.parent[1]": SUCCESS},
    }
)
def case_chord_header_members_that_retry(r: Run) -> ResultBase:
    header = [r.s("poll", 2), r.s("fetch_retrying", 1)]
    return chord(header, r.s("collect")).apply_async()


# A value the result serializer cannot store. The durable message says more (which
# invocation, which codec, what to do instead); the rest is the same.

_NOT_JSON = "Object of type set is not JSON serializable"


@case(
    {
        "result": error(EncodeError, f"TypeError({_NOT_JSON!r})"),
        "states": {"result": FAILURE},
        "signals": [failure("unstorable", "EncodeError", _NOT_JSON)],
    },
    same_messages=False,
)
def case_a_set_returned_from_the_body(r: Run) -> ResultBase:
    return r.s("unstorable").apply_async()


# Task.replace


@case({"result": value(20), "states": {"result": SUCCESS}})
def case_replace_with_a_task(r: Run) -> ResultBase:
    return r.s("replace_single", 1).apply_async()


@case({"result": value(30)})
def case_replace_with_a_chain(r: Run) -> ResultBase:
    return r.s("replace_chain", 1).apply_async()


@case({"result": value([2, 3, 4])})
def case_replace_with_a_group(r: Run) -> ResultBase:
    return r.s("replace_group", 1).apply_async()


@case({"result": value(9)})
def case_replace_with_a_chord(r: Run) -> ResultBase:
    return r.s("replace_chord", 1).apply_async()


@case({"result": value(25)})
def case_replacing_task_in_a_chain(r: Run) -> ResultBase:
    return (r.s("replace_single", 1) | r.s("add", 5)).apply_async()


@case({"result": value(35)})
def case_replaced_by_a_chain_in_a_chain(r: Run) -> ResultBase:
    return (r.s("replace_chain", 1) | r.s("add", 5)).apply_async()


@case({"result": value(9)})
def case_replaced_by_a_group_in_a_chain(r: Run) -> ResultBase:
    return (r.s("replace_group", 1) | r.s("xsum")).apply_async()


@case({"result": value(24)})
def case_replacing_task_in_a_chord_header(r: Run) -> ResultBase:
    return chord([r.s("replace_single", 1), r.s("add", 2, 2)], r.s("xsum")).apply_async()


@case({"result": value(20), "callbacks": [called("cb", 20)]})
def case_replacing_task_with_link(r: Run) -> ResultBase:
    return r.s("replace_single", 1).apply_async(link=r.on_success("cb"))


# Execution options


def _waited(seconds: float) -> Callable[[Run, ResultBase, datetime.datetime], dict[str, Any]]:
    def extra(r: Run, result: ResultBase, sent: datetime.datetime) -> dict[str, Any]:
        done = result.date_done
        if done is None:
            return {"waited": None}
        if done.tzinfo is None:
            done = done.replace(tzinfo=datetime.UTC)
        return {"waited": (done - sent).total_seconds() >= seconds - 0.05}

    return extra


@case({"result": value(3), "waited": True}, extra=_waited(1.0))
def case_countdown(r: Run) -> ResultBase:
    return r.s("add", 1, 2).apply_async(countdown=1)


@case({"result": value(3), "waited": True}, extra=_waited(1.0))
def case_eta(r: Run) -> ResultBase:
    eta = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
    return r.s("add", 1, 2).apply_async(eta=eta)


@case(
    {
        "result": value("connected on attempt 2"),
        "waited": True,
        "signals": sorted_records(
            retry("flaky_backoff", "ConnectionError", "attempt 1 refused"),
            success("flaky_backoff", "connected on attempt 2"),
        ),
    },
    extra=_waited(1.0),
)
def case_autoretry_with_retry_backoff(r: Run) -> ResultBase:
    return r.s("flaky_backoff", 1).apply_async()


@case(
    {
        "result": error(TaskRevokedError, "expired"),
        "states": {"result": REVOKED},
        "signals": [],
    }
)
def case_expired_before_it_ran(r: Run) -> ResultBase:
    expires = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=10)
    return r.s("add", 1, 2).apply_async(expires=expires)


@case({"result": value({"priority": 5})})
def case_priority(r: Run) -> ResultBase:
    return r.s("delivery").apply_async(priority=5)


# Time limits (the prefork pool)


@case(
    {
        "result": error(SoftTimeLimitExceeded, "SoftTimeLimitExceeded()"),
        "states": {"result": FAILURE},
    }
)
def case_soft_time_limit_not_caught(r: Run) -> ResultBase:
    return r.s("soft_uncaught", 3).apply_async()


@case({"result": value("soft-caught"), "signals": [success("soft_limited", "soft-caught")]})
def case_soft_time_limit_caught_around_a_step(r: Run) -> ResultBase:
    return r.s("soft_limited", 3).apply_async()


@case(
    {
        "result": error(TimeLimitExceeded, "TimeLimitExceeded(1,)"),
        "states": {"result": FAILURE},
    }
)
def case_hard_time_limit(r: Run) -> ResultBase:
    return r.s("hard_limited", 3).apply_async()


# Values that Celery's json serializer round-trips

for _kind in (
    "datetime",
    "naive-datetime",
    "date",
    "time",
    "decimal",
    "uuid",
    "bytes",
    "binary-bytes",
):
    _sample = sample(_kind)

    def _send(r: Run, kind: str = _kind) -> ResultBase:
        return r.s("make_value", kind).apply_async()

    case({"result": value([_sample, type(_sample).__name__, _sample])}, id=f"json-{_kind}")(_send)


# -- The test --------------------------------------------------------------------------


def _outcome(
    case: Case,
    r: Run,
    result: ResultBase,
    sent: datetime.datetime,
    like: dict[str, Any],
) -> dict[str, Any]:
    outcome = observe(
        r,
        result,
        case.timeout,
        min_callbacks=len(like.get("callbacks", [])),
        min_signals=len(like.get("signals", [])),
    )
    if case.extra is not None:
        outcome.update(case.extra(r, result, sent))
    return outcome


def test_the_durable_variant_keeps_a_journal(world: World) -> None:
    """The durable variant really runs as a DurableTask, its work in journaled steps."""
    runs = {variant: world.run(variant) for variant in VARIANTS}
    results = {variant: r.s("add", 1, 2).apply_async() for variant, r in runs.items()}
    assert {variant: result.get(timeout=15) for variant, result in results.items()} == {
        "plain": 3,
        "durable": 3,
    }
    assert get_invocation(world.app, results["plain"].id) is None
    journal = get_invocation(world.app, results["durable"].id)
    assert journal is not None
    assert journal.task_name == "durable.add"
    assert journal.status == "completed"
    assert [(step.name, step.status, step.value) for step in journal.steps] == [
        ("add", "completed", 3)
    ]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_same_outcome_as_plain_celery(world: World, case: Case) -> None:
    runs = {variant: world.run(variant) for variant in VARIANTS}
    sent: dict[str, datetime.datetime] = {}
    results: dict[str, ResultBase] = {}
    for variant, r in runs.items():  # both are under way before either is awaited
        sent[variant] = datetime.datetime.now(datetime.UTC)
        results[variant] = case.send(r)

    plain = _outcome(case, runs["plain"], results["plain"], sent["plain"], case.expect)
    shown = {key: plain.get(key) for key in case.expect}
    assert shown == case.expect, (
        f"the PLAIN variant of {case.id} does not show what the case expects from Celery; "
        f"the case is wrong. Plain outcome: {plain}"
    )

    durable = _outcome(case, runs["durable"], results["durable"], sent["durable"], plain)
    if not case.same_messages:
        plain, durable = _without_messages(plain), _without_messages(durable)
    assert durable == plain, f"DurableTask differs from plain Celery in {case.id}"


def _without_messages(outcome: dict[str, Any]) -> dict[str, Any]:
    """The outcome with every error message left out: what the error is, not its words."""
    result = outcome["result"]
    if result[0] == "error":
        result = result[:2]
    signals = [
        {**record, "exc": {**record["exc"], "message": "..."}} if record.get("exc") else record
        for record in outcome["signals"]
    ]
    return {**outcome, "result": result, "signals": signals}
