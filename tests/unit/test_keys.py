"""Keys of an invocation: one hash slot for any task id, and the old keys kept."""

from __future__ import annotations

import itertools

import pytest

from celery_durable.keys import KeySpace, key_slot

#: Task ids whose braces could move a key's hash tag: Redis hashes the text between a
#: key's first ``{`` and the first ``}`` after it, and the whole key when that is empty.
ADVERSARIAL = (
    "", "}", "}}", "}abc", "}{x}", "{", "{}", "{{}}", "}{}", "a}b", "a{b}c", "{a", "a}",
    "~", "#", "#{0}", "}:meta", ":journal}",
)  # fmt: skip
ORDINARY = ("order-1", "3f0c2f4e-6a7b-4c1d-9e8f-0a1b2c3d4e5f", "parent/3", "a{b}c", "{")


@pytest.mark.parametrize("cluster", [False, True])
@pytest.mark.parametrize("task_id", ADVERSARIAL)
def test_an_invocations_keys_share_one_slot_whatever_its_id_on_a_cluster(
    task_id: str, cluster: bool
) -> None:
    keys = KeySpace("durable", cluster=cluster).invocation(task_id)
    slots = {key_slot(keys.meta), key_slot(keys.journal), key_slot(keys.done)}
    if cluster:
        assert len(slots) == 1, (task_id, keys)
        assert KeySpace("durable", cluster=True).slot(task_id) in slots


def test_no_two_ids_share_a_key() -> None:
    for cluster in (False, True):
        space = KeySpace("durable", cluster=cluster)
        made = {}
        for task_id in set(itertools.chain(ADVERSARIAL, ORDINARY)):
            for key in (space.invocation(task_id).meta, space.invocation(task_id).journal):
                assert key not in made, (task_id, made.get(key))
                made[key] = task_id


@pytest.mark.parametrize("task_id", (*ORDINARY, "a}b", "{}", "}x"))
def test_ids_keep_the_keys_they_had_on_one_redis(task_id: str) -> None:
    keys = KeySpace("durable").invocation(task_id)
    assert keys.meta == f"durable:{{{task_id}}}:meta"
    assert keys.journal == f"durable:{{{task_id}}}:journal"


@pytest.mark.parametrize("task_id", (*ORDINARY, "a}b", "~", "#"))
def test_ids_with_a_tag_keep_the_keys_they_had_on_a_cluster(task_id: str) -> None:
    keys = KeySpace("durable", cluster=True).invocation(task_id)
    assert keys.meta == f"durable:{{{task_id}}}:meta"


def test_an_id_that_would_have_no_tag_stays_readable_on_a_cluster() -> None:
    keys = KeySpace("durable", cluster=True).invocation("}odd")
    assert keys.meta.startswith("durable:#{") and keys.meta.endswith("}:}odd:meta")


def test_key_slot_follows_redis_rules() -> None:
    # Values from CLUSTER KEYSLOT on Redis 7.
    assert key_slot("foo") == 12182
    assert key_slot("{user1000}.following") == key_slot("user1000")
    assert key_slot("foo{}{bar}") == key_slot("foo{}{bar}")  # empty tag: the whole key
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")
    assert key_slot("foo{bar}{zap}") == key_slot("bar")
