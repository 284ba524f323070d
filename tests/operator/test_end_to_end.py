"""Resume, restart and resolve end to end: a real worker subprocess, real Redis, and
``celery -A tests.operator.proj durable ...`` as an operator runs it.

A task fails (or pauses) because of a bug in a step; the test fixes the "code" (a flag
in Redis the step reads), resumes it, and checks that earlier steps did not run again.
One worker serves the whole module, each test with its own task ids and orders.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from celery import Celery
from celery.bin.base import CLIContext
from click.testing import CliRunner, Result

from celery_durable import Invocation, get_invocation, resume_invocation
from celery_durable.cli import durable
from celery_durable.runtime import release_runtime
from tests.conftest import REDIS_URL
from tests.operator.proj import (
    APPROVAL,
    ENV_PREFIX,
    PAUSING,
    PIPELINE,
    STEPS,
    broken_key,
    make_app,
    runs_key,
)

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0
T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + TIMEOUT
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {TIMEOUT:.0f}s waiting for {what}")
        time.sleep(0.05)
    return value


@dataclass
class World:
    """The module's prefix, its client app, its worker subprocess and its Redis."""

    prefix: str
    app: Celery
    client: redis.Redis
    environ: dict[str, str]
    log: Path

    def celery(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``celery -A tests.operator.proj ARGS...`` as its own process."""
        return self.paste(shlex.join(["celery", "-A", "tests.operator.proj", *args]))

    def paste(self, line: str) -> subprocess.CompletedProcess[str]:
        """Run a ``celery ...`` command line as an operator pastes it into a shell."""
        program, *args = shlex.split(line)
        assert program == "celery", line
        script = shutil.which("celery", path=str(Path(sys.executable).parent))
        command = [script] if script else [sys.executable, "-m", "celery"]
        return subprocess.run(
            [*command, *args],
            cwd=ROOT, env=self.environ, capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip

    def cli(self, *args: str) -> Result:
        """The same command in this process, through click's CliRunner (faster)."""
        context = CLIContext(app=self.app, no_color=True, workdir=None)
        return CliRunner().invoke(durable, list(args), obj=context)

    def send(self, task: str, order: str) -> str:
        task_id = f"{self.prefix}-{uuid.uuid4().hex[:8]}"
        self.app.send_task(task, args=[order], task_id=task_id)
        return task_id

    def wait_status(self, task_id: str, status: str) -> Invocation:
        def reached() -> Invocation | None:
            inv = get_invocation(self.app, task_id)
            return inv if inv is not None and inv.status == status else None

        try:
            return wait_for(reached, f"{task_id} to be {status}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker log:\n{self.log.read_text()}") from None

    def runs(self, order: str) -> dict[str, int]:
        values = self.client.mget([runs_key(self.prefix, order, step) for step in STEPS])
        return {step: int(v or 0) for step, v in zip(STEPS, values, strict=True)}

    def break_step(self, step: str) -> None:
        self.client.set(broken_key(self.prefix, step), 1)

    def fix_step(self, step: str) -> None:
        self.client.delete(broken_key(self.prefix, step))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"these tests need Redis at {REDIS_URL}; start redis-server")
    prefix = f"op-{uuid.uuid4().hex[:10]}"
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        ENV_PREFIX: prefix,
        "DURABLE_TEST_REDIS_URL": REDIS_URL,
    }
    log = tmp_path_factory.mktemp("operator") / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.operator.proj", "worker",
             "--pool=solo", "-Q", f"{prefix}:q", "-n", f"{prefix}@%h", "--loglevel=info",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=environ, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    app = make_app(prefix)
    try:

        def ready() -> bool:
            assert worker.poll() is None, f"the worker exited:\n{log.read_text()}"
            return bool(re.search(r"@\S+ ready\.", log.read_text()))

        wait_for(ready, "the worker to be ready")
        yield World(prefix, app, client, environ, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        release_runtime(app)
        app.close()
        client.close()


def test_a_failed_invocation_resumes_after_the_fix_without_rerunning_earlier_steps(
    world: World,
) -> None:
    world.break_step("charge")
    task_id = world.send(PIPELINE, "o-failed")
    failed = world.wait_status(task_id, "failed")
    assert [(s.name, s.status) for s in failed.steps] == [
        ("reserve", "completed"), ("charge", "failed"),
    ]  # fmt: skip
    assert world.runs("o-failed") == {"reserve": 1, "charge": 1, "ship": 0}

    world.fix_step("charge")  # the fix is deployed
    resumed = world.celery("durable", "resume", task_id)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resumed invocation {task_id} (it was failed)." in resumed.stdout
    assert "Dropped the failure of step 1 'charge'; it runs again." in resumed.stdout

    done = world.wait_status(task_id, "completed")
    assert world.runs("o-failed") == {"reserve": 1, "charge": 2, "ship": 1}
    assert [s.status for s in done.steps] == ["completed"] * 3
    assert done.result["steps"] == ["reserve:o-failed", "charge:o-failed", "ship:o-failed"]
    assert world.app.AsyncResult(task_id).get(timeout=TIMEOUT) == done.result


def test_a_paused_invocation_resumes_with_a_fresh_set_of_attempts(world: World) -> None:
    world.break_step("charge")
    task_id = world.send(PAUSING, "o-paused")
    paused = world.wait_status(task_id, "paused")
    assert [(s.name, s.status, s.attempts) for s in paused.steps] == [
        ("reserve", "completed", 1), ("charge", "paused", 2),
    ]  # fmt: skip
    assert world.runs("o-paused") == {"reserve": 1, "charge": 2, "ship": 0}

    world.fix_step("charge")
    assert resume_invocation(world.app, task_id).previous_status == "paused"
    done = world.wait_status(task_id, "completed")
    assert world.runs("o-paused") == {"reserve": 1, "charge": 3, "ship": 1}
    assert [s.attempts for s in done.steps] == [1, 1, 1]


def test_a_paused_invocation_delivered_again_stays_paused_until_resumed(world: World) -> None:
    world.break_step("charge")
    task_id = world.send(PAUSING, "o-again")
    world.wait_status(task_id, "paused")
    assert world.runs("o-again") == {"reserve": 1, "charge": 2, "ship": 0}
    backend_state = world.app.AsyncResult(task_id).state

    # A duplicate publish (or a restored message) of the same task id: it is acknowledged
    # and logged with the command that resumes it, and runs nothing.
    world.fix_step("charge")  # even with the cause fixed, only an operator moves it on
    world.app.send_task(PAUSING, args=["o-again"], task_id=task_id)
    hint = f"celery -A {world.app.main} durable resume {task_id}"

    def ignored() -> bool:
        return hint in world.log.read_text() or world.runs("o-again")["charge"] > 2

    wait_for(ignored, "the worker to take the second delivery")
    assert world.runs("o-again") == {"reserve": 1, "charge": 2, "ship": 0}
    assert hint in world.log.read_text()
    paused = get_invocation(world.app, task_id)
    assert paused is not None and paused.status == "paused"
    assert world.app.AsyncResult(task_id).state == backend_state  # the backend is untouched

    # An operator who resumes it without publishing sends the task again themselves.
    assert not resume_invocation(world.app, task_id, publish=False).published
    world.app.send_task(PAUSING, args=["o-again"], task_id=task_id)
    world.wait_status(task_id, "completed")
    assert world.runs("o-again") == {"reserve": 1, "charge": 3, "ship": 1}


def test_restart_from_a_step_runs_it_and_the_rest_again_under_a_new_id(world: World) -> None:
    task_id = world.send(PIPELINE, "o-restart")
    original = world.wait_status(task_id, "completed")
    assert world.runs("o-restart") == {"reserve": 1, "charge": 1, "ship": 1}

    new_id = f"{task_id}-again"
    result = world.cli("restart", task_id, "--from-step", "1", "--new-id", new_id)
    assert result.exit_code == 0, result.output
    assert f"as {new_id}." in result.stdout

    fork = world.wait_status(new_id, "completed")
    assert world.runs("o-restart") == {"reserve": 1, "charge": 2, "ship": 2}
    assert fork.seed == original.seed
    assert fork.result == original.result  # the same seed: the same ctx.rand key too
    assert fork.steps[0].finished_at == original.steps[0].finished_at  # replayed, not rerun
    assert fork.steps[1].finished_at != original.steps[1].finished_at
    unchanged = get_invocation(world.app, task_id)
    assert unchanged is not None and unchanged.status == "completed"


def test_show_names_the_awaited_awakeable_and_resolve_wakes_the_invocation(
    world: World,
) -> None:
    task_id = world.send(APPROVAL, "o-approval")
    world.wait_status(task_id, "suspended")
    listed = world.cli("ls", "--status", "suspended")
    assert re.search(rf"{task_id}\s+{APPROVAL}\s+suspended\s+2\s+\d+s\s+awakeable 'approval'",
                     listed.stdout), listed.stdout  # fmt: skip
    shown = world.celery("durable", "show", task_id)
    assert shown.returncode == 0, shown.stderr
    # The hint names the app as it was given, so it runs as it stands.
    match = re.search(
        r"(celery -A tests\.operator\.proj durable resolve awk1\.\S+) JSON", shown.stdout
    )
    assert match, shown.stdout

    resolved = world.paste(f'{match.group(1)} \'{{"approved_by": "ada"}}\'')
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.startswith("Resolved awakeable awk1."), resolved.stdout
    assert resolved.stderr == ""  # no warning of a default Redis: the app was named
    done = world.wait_status(task_id, "completed")
    assert done.result == {"order": "o-approval", "answer": {"approved_by": "ada"}}


def test_the_celery_command_line_has_the_durable_commands(world: World) -> None:
    task_id = world.send(PIPELINE, "o-listed")
    world.wait_status(task_id, "completed")
    listed = world.celery("durable", "ls", "--task", PIPELINE, "--json")
    assert listed.returncode == 0, listed.stderr
    found = {inv["id"]: inv for inv in json.loads(listed.stdout)}
    assert found[task_id]["status"] == "completed"
    assert [s["name"] for s in found[task_id]["steps"]] == list(STEPS)

    without_app = world.paste("celery durable ls")
    assert without_app.returncode == 2
    assert "name your app with -A" in without_app.stderr
    assert "celery -A proj durable ls" in without_app.stderr
    assert without_app.stdout == ""

    missing = world.celery("durable", "show", "no-such-id")
    assert missing.returncode == 1
    assert "no invocation no-such-id is kept" in missing.stderr
    assert missing.stdout == ""
