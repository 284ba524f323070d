"""The package as a user gets it: a wheel built from the sdist, in a clean venv.

``python -m build`` builds the sdist, then the wheel from the sdist, as PyPI users get
it, so a file the sdist leaves out is missing from the wheel too. The wheel goes into
a fresh venv (not editable, no source tree on the path), where the test checks what
only an installed distribution has: its data files (the Lua scripts, ``py.typed``,
whatever else lives in the package), and its entry points (the ``celery durable``
command and the pytest plugin).

pip reuses its cache, so the venv costs a few seconds once the cache is warm.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import textwrap
import venv
import zipfile
from pathlib import Path

from tests.conftest import REDIS_URL
from tests.processes import ROOT

PACKAGE = "celery_durable"
TIMEOUT = 300

#: Run in the clean venv: the installed package, not the source tree, loads every Lua
#: script into Redis, and one of them runs as a store's start.
CHECK_SCRIPTS = """
import sys
from pathlib import Path

import redis

import celery_durable
from celery_durable.journal.store import StartRequest
from celery_durable.keys import KeySpace
from celery_durable.stores.redis import RedisJournalStore
from celery_durable.stores.redis.scripts import ALL

assert Path(celery_durable.__file__).is_relative_to(sys.prefix), celery_durable.__file__
url, prefix = sys.argv[1:3]
client = redis.Redis.from_url(url)
for script in ALL:
    assert client.script_load(script.source) == script.sha, script.name
store = RedisJournalStore.from_url(url, KeySpace(prefix))
started = store.start("inv", StartRequest("t", "fp", 1, 30.0, "host:1"))
assert started.state == "run", started
store.forget("inv")
print("scripts ok", len(ALL))
"""

TINY_APP = """
from celery import Celery

app = Celery("tiny")
"""


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, (
        f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


def package_files() -> set[str]:
    """The files of the package in the source tree, as paths inside the wheel."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / PACKAGE).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_built_from_the_sdist_works_in_a_clean_venv(
    tmp_path: Path, key_prefix: str
) -> None:
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], cwd=tmp_path)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")

    in_wheel = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith(PACKAGE)}
    assert package_files() - in_wheel == set(), "files of the package missing from the wheel"
    with tarfile.open(sdist) as archive:
        in_sdist = {name.partition("/")[2] for name in archive.getnames()}
    assert {"README.md", "pyproject.toml"} <= in_sdist

    # A venv without pip of its own: this venv's pip installs into it (--python).
    clean = tmp_path / "clean"
    venv.create(clean, with_pip=False)
    python = str(clean / "bin" / "python")
    run(
        [
            sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
            "--no-compile", "-c", str(ROOT / "constraints.txt"), str(wheel), "pytest",
        ],
        cwd=tmp_path,
    )  # fmt: skip
    outside = tmp_path / "outside"  # no pyproject.toml, no conftest, no source tree
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}

    checked = run([python, "-c", CHECK_SCRIPTS, REDIS_URL, key_prefix], outside, env)
    assert checked.startswith("scripts ok")

    (outside / "tinyapp.py").write_text(textwrap.dedent(TINY_APP))
    usage = run([str(clean / "bin" / "celery"), "-A", "tinyapp", "durable", "--help"], outside, env)
    assert "Usage: celery durable" in usage

    option = run([python, "-m", "pytest", "--help"], outside, env)
    assert "--durable-replay-each-step" in option
    fixtures = run([python, "-m", "pytest", "--fixtures"], outside, env)
    assert "durable_app" in fixtures and "durable_journal" in fixtures
