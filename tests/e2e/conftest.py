"""Fixtures for the end-to-end tier: a private Prosody (c2s + its own BOSH/WebSocket) on
127.0.0.1.

Run as ``python -m pytest`` from the project root (as ``make test`` does) so that
``tests.support`` is importable.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.support.prosody import PROSODY_BIN, PrivateProsody

#: Accounts created in the shared Prosody: user -> password.
USERS: dict[str, str] = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


def _require_prosody() -> None:
    if shutil.which(PROSODY_BIN) is None:
        pytest.fail(f"{PROSODY_BIN} not found: run `make system-deps` (apt package prosody)")


@pytest.fixture(scope="session")
def prosody() -> Iterator[PrivateProsody]:
    """One private Prosody for the session, with users alice, bob and carol (see `USERS`)."""
    _require_prosody()
    server = PrivateProsody()
    try:
        for user, password in USERS.items():
            server.register(user, password)
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def fresh_prosody() -> Iterator[PrivateProsody]:
    """A Prosody of the test's own (for tests that kill or restart the server)."""
    _require_prosody()
    server = PrivateProsody()
    try:
        for user, password in USERS.items():
            server.register(user, password)
        server.start()
        yield server
    finally:
        server.cleanup()
