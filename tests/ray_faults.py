"""Fault injection for the Ray tests, kept out of the package: Ray runs `arm` in every worker process it
starts (`worker_process_setup_hook`), and it wraps the encoding actor so that the actor taking the next
batch after a test writes CRASH_FILE removes the file and dies (the first to remove it wins: one actor
dies, once). Ray then restarts the actor and retries the batch, which is what the test checks."""

from __future__ import annotations

import os

from clipsearch.index import engines

CRASH_FILE_ENV = "CLIPSEARCH_TEST_RAY_CRASH_FILE"  # set before ray.init: the workers inherit it


def arm() -> None:
    encode = engines.EncodeActor.__call__

    def encode_or_die(actor: engines.EncodeActor, batch: dict) -> dict:
        try:
            os.unlink(os.environ[CRASH_FILE_ENV])
        except (KeyError, FileNotFoundError):
            return encode(actor, batch)
        os._exit(1)

    engines.EncodeActor.__call__ = encode_or_die
