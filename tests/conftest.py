"""Shared pytest fixtures.

The third-party conformance data lives in ``../shared/data`` beside the repository
(or wherever ``MENET_SHARED_DATA`` points); tests that need it skip, saying why,
when it is absent. It is never copied into the project.
"""
from __future__ import annotations

import os
from pathlib import Path

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
