"""Shared pytest fixtures.

The third-party conformance data lives in ``../shared/data`` beside the repository
(or wherever ``MENET_SHARED_DATA`` points); tests that need it skip, saying why,
when it is absent. It is never copied into the project.

State that several tests share goes through the fixtures here, never through module
globals or fixtures imported into test modules: a fixture defined here is built once
for the session and gives every test the same value whatever order the tests run in.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    env = os.environ.get("MENET_SHARED_DATA")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"third-party conformance data not found at {path} (set MENET_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def stream_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny stream config and a random-weight checkpoint for it (tests/stream_support.py).

    Session-scoped: building the checkpoint costs a model construction, and every
    streaming test module reads the same one.
    """
    # imported here: stream_support pulls in torch, which most test modules never need
    from stream.settings import load_config
    from stream_support import make_checkpoint, write_config

    root = tmp_path_factory.mktemp("stream")
    cfg_path = write_config(root)
    cfg = load_config(cfg_path)
    ckpt = make_checkpoint(cfg, root / "ckpt.pt")
    return {"root": root, "cfg_path": cfg_path, "cfg": cfg, "ckpt": ckpt}


@dataclass
class FuzzTally:
    """What one fuzzing strategy did, counted as it ran (nothing in it is assumed).

    ``crashes``: inputs that raised anything but the expected error, with that error.
    ``wrongly_accepted``: inputs the strategy builds to be refused that were accepted.
    """

    tried: int = 0
    rejected: int = 0
    accepted: int = 0
    crashes: list[str] = field(default_factory=list)
    wrongly_accepted: list[str] = field(default_factory=list)

    @property
    def crashed(self) -> bool:
        return bool(self.crashes)


class FuzzRuns:
    """Fuzzing strategies run at most once per session, by whichever test asks first."""

    def __init__(self) -> None:
        self._tallies: dict[str, FuzzTally] = {}

    def tally(self, name: str, run: Callable[[FuzzTally], None]) -> FuzzTally:
        """The tally of strategy ``name``; ``run(tally)`` fills it the first time only."""
        if name not in self._tallies:
            tally = FuzzTally()
            run(tally)
            self._tallies[name] = tally  # stored only once complete: a failed run is retried, not half-read
        return self._tallies[name]


@pytest.fixture(scope="session")
def fuzz_runs() -> FuzzRuns:
    """The protocol fuzz (tests/test_hardening_fuzz.py): per-strategy tests and the total read one run."""
    return FuzzRuns()
