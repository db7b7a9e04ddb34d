"""sockkit's own tests use the kit sockkit ships: ``sockkit.testing`` and its pytest plugin
(``sockkit.pytest_plugin``: ``sockkit_model``, ``sockkit_certificate``...). Only two short names
for its fixtures live here, because sockkit's tests have always called them so."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def model(sockkit_model: str) -> str:
    """Each server model in turn (the kit's ``sockkit_model``)."""
    return sockkit_model


@pytest.fixture
def certificate(sockkit_certificate: tuple[Path, Path]) -> tuple[Path, Path]:
    """The kit's self-signed certificate for 127.0.0.1 and localhost."""
    return sockkit_certificate
