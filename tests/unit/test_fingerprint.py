"""Argument fingerprints: equal in every process, different for other arguments."""

from __future__ import annotations

import os
import subprocess
import sys

from celery_durable.invocation import fingerprint

SCRIPT = """
from celery_durable.invocation import fingerprint

class Order:
    def __init__(self, sku):
        self.sku = sku

print(fingerprint("t", ({"sku-1", "sku-2", "sku-3"}, Order("A1"), b"x"), {"n": 1}))
"""


def in_process(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_fingerprint_is_the_same_in_every_process() -> None:
    # Set order follows string hashing, which differs per process; so do object addresses.
    assert len({in_process(seed) for seed in ("1", "2", "3")}) == 1


def test_other_arguments_give_another_fingerprint() -> None:
    assert fingerprint("t", ({"a", "b"},), {}) != fingerprint("t", ({"a", "c"},), {})
    assert fingerprint("t", (1,), {}) != fingerprint("t", (), {"x": 1})
