"""A test kit for durable tasks: isolated apps, journals, replay-each-step, replay.

- ``isolated(app, key_prefix=None, replay_each_step=None)``: journals of its own for
  an app, for a block.
- ``JournalReader(app)``: read (``get``, ``steps``, ``names``), export and save journals,
  eager ones and Redis ones alike.
- ``replay(task, journal)``: run today's code against a recorded journal (what
  ``celery durable show ID --json`` prints) without running any step; report the first
  divergence.
- The pytest plugin (``celery_durable.testing.plugin``, loaded by pytest on its own):
  the ``durable_app``, ``durable_config``, ``durable_key_prefix``, ``durable_journal``
  and ``durable_replay_each_step`` fixtures, the ``durable_replay_each_step`` marker,
  and the ``--durable-replay-each-step`` option.
"""

from celery_durable.testing.apps import EAGER_CONFIG, isolated
from celery_durable.testing.journals import (
    JournalReader,
    RecordedJournal,
    invocation_json,
    load_journal,
)
from celery_durable.testing.replayer import Divergence, ReplayResult, replay

__all__ = [  # noqa: RUF022 - grouped by purpose
    # Apps
    "isolated",
    "EAGER_CONFIG",
    # Journals
    "JournalReader",
    "RecordedJournal",
    "load_journal",
    "invocation_json",
    # Replay
    "replay",
    "ReplayResult",
    "Divergence",
]
