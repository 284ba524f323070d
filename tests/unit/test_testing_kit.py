"""The test kit for users: the pytest plugin's fixtures, and replay-each-step when eager."""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import pytest
from celery import Celery

from celery_durable import ConfigurationError, DurableTask, NonDeterminismError
from celery_durable.runtime import runtime_for
from celery_durable.settings import DurableSettings
from celery_durable.testing import JournalReader, isolated

pytest_plugins = ("pytester",)


def define_tasks(app: Celery, runs: list[str]) -> dict[str, Any]:
    """Two bodies: one deterministic, one whose steps depend on what it sees each time."""

    @app.task(base=DurableTask, bind=True, shared=False)
    def steady(self: DurableTask, n: int) -> int:
        runs.append("steady")
        total = 0
        for i in range(n):
            total += self.ctx.run(f"add-{i}", lambda i=i: i)
        key = self.ctx.rand.uuid4().hex[:6]  # checkpointed: the same on every replay
        self.ctx.run(f"label-{key}", lambda: key)
        return total

    @app.task(base=DurableTask, bind=True, shared=False)
    def fickle(self: DurableTask, how: str) -> str:
        runs.append("fickle")
        self.ctx.run("first", lambda: 1)
        if how == "uuid":
            self.ctx.run(f"charge-{uuid.uuid4().hex[:8]}", lambda: 2)
        elif how == "clock":  # which report it files depends on when it runs
            self.ctx.run(f"report-{time.time_ns()}", lambda: 2)
        elif how == "random":
            self.ctx.run(random.choice(["a", "b", "c", "d", "e", "f", "g", "h"]) * 3, lambda: 2)
        self.ctx.run("last", lambda: 3)
        return "done"

    return {"steady": steady, "fickle": fickle}


@pytest.mark.durable_replay_each_step
def test_the_marker_replays_each_step_and_a_deterministic_body_passes(
    durable_app: Celery, durable_journal: JournalReader
) -> None:
    runs: list[str] = []
    tasks = define_tasks(durable_app, runs)
    result = tasks["steady"].delay(3)
    assert result.get() == 3
    names = durable_journal.names(result.id)
    assert names[:3] == ["add-0", "add-1", "add-2"] and names[3].startswith("label-")
    # One execution per journal entry, and a last one that replays them all.
    assert len(runs) == len(names) + 1
    assert durable_journal[result.id].status == "completed"


@pytest.mark.durable_replay_each_step
@pytest.mark.parametrize("how", ["uuid", "clock"])
def test_the_marker_catches_a_body_that_is_not_deterministic(
    durable_app: Celery, durable_journal: JournalReader, how: str
) -> None:
    tasks = define_tasks(durable_app, [])
    with pytest.raises(NonDeterminismError, match="is not deterministic at journal index 1"):
        tasks["fickle"].delay(how)
    durable_app.conf.task_eager_propagates = False
    result = tasks["fickle"].apply((how,), task_id="f-1")
    assert isinstance(result.result, NonDeterminismError)
    assert durable_journal["f-1"].status == "paused"


def test_the_fixture_turns_the_mode_on_and_random_branches_fail(
    durable_app: Celery, durable_replay_each_step: bool
) -> None:
    tasks = define_tasks(durable_app, [])
    random.seed(1)  # eight names: the replay picks another one seven times in eight
    failures = 0
    for _ in range(8):
        try:
            tasks["fickle"].delay("random").get()
        except NonDeterminismError:
            failures += 1
    assert failures >= 4


def test_without_the_mode_the_same_body_passes(
    durable_app: Celery, durable_journal: JournalReader
) -> None:
    runs: list[str] = []
    tasks = define_tasks(durable_app, runs)
    result = tasks["fickle"].delay("uuid")
    assert result.get() == "done"
    assert len(runs) == 1
    assert durable_journal.names(result.id)[0] == "first"


def test_durable_app_is_eager_and_isolated(durable_app: Celery, durable_key_prefix: str) -> None:
    settings = runtime_for(durable_app).settings
    assert settings.key_prefix == durable_key_prefix
    assert settings.replay_each_step is False
    assert settings.eager_journal == "memory" and durable_app.conf.task_always_eager


def test_isolated_restores_an_apps_own_settings() -> None:
    app = Celery("mine", set_as_current=False)
    app.conf.update(durable_key_prefix="shop", task_always_eager=True)
    with isolated(app, replay_each_step=True) as same:
        assert same is app
        assert runtime_for(app).settings.replay_each_step is True
        assert runtime_for(app).settings.key_prefix.startswith("test-")
    assert app.conf.durable_key_prefix == "shop"
    assert "durable_replay_each_step" not in app.conf
    assert runtime_for(app).settings.replay_each_step is False


def test_the_setting_must_be_a_bool() -> None:
    assert DurableSettings.from_conf({"durable_replay_each_step": True}).replay_each_step
    with pytest.raises(ConfigurationError, match="durable_replay_each_step='yes'"):
        DurableSettings.from_conf({"durable_replay_each_step": "yes"})


def test_a_journal_reader_reads_eager_journals_without_touching_redis(
    durable_app: Celery, durable_journal: JournalReader
) -> None:
    tasks = define_tasks(durable_app, [])
    result = tasks["steady"].delay(1)
    result.get()
    assert durable_journal.get("nope") is None
    assert [inv.id for inv in durable_journal.invocations()] == [result.id]
    assert runtime_for(durable_app).settings.redis_url == ""  # and so nothing connected
    with pytest.raises(KeyError, match="no journal of invocation nope"):
        durable_journal.steps("nope")


def test_the_plugin_is_registered_for_users_through_its_entry_point(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_user="""
        import uuid
        import pytest
        from celery_durable import DurableTask, NonDeterminismError

        def tasks(app):
            @app.task(base=DurableTask, bind=True, shared=False)
            def good(self):
                return [self.ctx.run(f"s{i}", lambda i=i: i) for i in range(3)]

            @app.task(base=DurableTask, bind=True, shared=False)
            def bad(self):
                self.ctx.run("a", lambda: 1)
                return self.ctx.run(uuid.uuid4().hex, lambda: 2)
            return good, bad

        def test_good(durable_app, durable_journal):
            good, _ = tasks(durable_app)
            result = good.delay()
            assert result.get() == [0, 1, 2]
            assert durable_journal.names(result.id) == ["s0", "s1", "s2"]

        def test_bad(durable_app):
            _, bad = tasks(durable_app)
            with pytest.raises(NonDeterminismError):
                bad.delay().get()
        """
    )
    outcome = pytester.runpytest("-p", "no:cacheprovider", "--durable-replay-each-step")
    outcome.assert_outcomes(passed=2)
    # Without the mode nothing replays the body, and its uuid4 goes unnoticed.
    outcome = pytester.runpytest("-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=1, failed=1)
