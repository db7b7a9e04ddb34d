"""sockkit's own tests use the kit sockkit ships: ``sockkit.testing`` and its pytest plugin
(``sockkit.pytest_plugin``: ``sockkit_model``, ``sockkit_certificate``...). Only two short names
for its fixtures live here, because sockkit's tests have always called them so."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sockkit import netlab


@pytest.fixture
def model(sockkit_model: str) -> str:
    """Each server model in turn (the kit's ``sockkit_model``)."""
    return sockkit_model


@pytest.fixture
def certificate(sockkit_certificate: tuple[Path, Path]) -> tuple[Path, Path]:
    """The kit's self-signed certificate for 127.0.0.1 and localhost."""
    return sockkit_certificate


@pytest.fixture
def socket_activate() -> str:
    """systemd's ``systemd-socket-activate``, with network namespaces to run it in (it binds fixed
    ports); the test is skipped, saying why, where either is missing."""
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate is not installed (Debian package systemd)")
    reason = netlab.unavailable()
    if reason:
        pytest.skip(reason)
    return tool
