"""Apps for tests: an isolated key prefix, and the ``durable_replay_each_step`` mode."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery_durable.runtime import release_runtime, runtime_for

#: What ``durable_app`` is configured with unless ``durable_config`` says otherwise:
#: eager execution, journals in this process, no broker or Redis needed.
EAGER_CONFIG: dict[str, Any] = {
    "broker_url": "memory://",
    "result_backend": "cache+memory://",
    "task_always_eager": True,
    "task_eager_propagates": True,
    "durable_eager_journal": "memory",
}

_UNSET = object()


def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@contextmanager
def isolated(
    app: Any, key_prefix: str | None = None, replay_each_step: bool | None = None
) -> Iterator[Any]:
    """Give ``app`` journals of its own for the block, then put its settings back.

    Journal keys go under ``key_prefix`` (a unique one if None) and are deleted from
    Redis afterwards; eager journals start empty. With ``replay_each_step`` the
    ``durable_replay_each_step`` setting is set for the block (None leaves it alone).
    Use it for an app of your own (the ``durable_app`` fixture uses it too)::

        with isolated(proj.app, replay_each_step=True):
            assert proj.checkout.delay("o-1").get() == {"status": "paid"}
    """
    changes: dict[str, Any] = {"durable_key_prefix": key_prefix or unique_prefix()}
    if replay_each_step is not None:
        changes["durable_replay_each_step"] = replay_each_step
    saved = {k: app.conf.get(k, _UNSET) for k in changes}
    release_runtime(app)  # settings are read once per app: read them again
    app.conf.update(changes)
    try:
        yield app
    finally:
        _delete_keys(app, changes["durable_key_prefix"])
        release_runtime(app)
        for k, v in saved.items():
            if v is _UNSET:
                del app.conf[k]
            else:
                app.conf[k] = v


def _delete_keys(app: Any, prefix: str) -> None:
    """Delete the journal keys under ``prefix``, if the app ever connected to Redis."""
    store = getattr(runtime_for(app), "_store", None)
    if store is None:
        return
    keys = list(store.client.scan_iter(f"{glob_escaped(prefix)}:*", count=1000))
    if keys:
        store.client.delete(*keys)


def glob_escaped(text: str) -> str:
    """``text`` as a Redis ``MATCH`` pattern that matches only itself: a prefix such as
    ``t[12]`` must not also match ``t1``'s keys."""
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)
