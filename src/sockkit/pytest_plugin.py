"""sockkit's pytest plugin, registered as the ``pytest11`` entry point ``sockkit``: your service under
every model it can run under, over real loopback sockets.

Define a ``sockkit_service`` fixture returning your service; a test taking ``sockkit_server`` then
runs once per model (``sockkit_model``), against the service running in a forked child
(``sockkit.background()``). A model that cannot give the service what it ``needs`` skips the test
with the refusal sentence as the reason, so the report says which models and why.
Rule: pytest loads this module in every run where sockkit is installed, so at import it loads only
the model registry; a server starts only when a test asks for one.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sockkit.catalog import MODELS


@pytest.fixture
def sockkit_service() -> Any:
    """Yours to define: the service under test."""
    pytest.fail("define a `sockkit_service` fixture returning your service to use `sockkit_server`", pytrace=False)


@pytest.fixture
def sockkit_options() -> dict[str, Any]:
    """Yours to override: more keyword arguments for ``sockkit.background()`` (limits such as
    ``max_connections``, ``workers``...)."""
    return {}


@pytest.fixture(params=list(MODELS))
def sockkit_model(request: pytest.FixtureRequest) -> str:
    """Each server model in turn."""
    return request.param


@pytest.fixture(scope="session")
def sockkit_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(cert, key)``: a self-signed P-256 certificate for 127.0.0.1 and localhost, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not installed (Debian package openssl)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def sockkit_server(request: pytest.FixtureRequest, sockkit_service: Any, sockkit_model: str,
                   sockkit_options: dict[str, Any]) -> Iterator[Any]:
    """``sockkit_service`` running under ``sockkit_model``: a ``sockkit.RunningServer``. Stopped with
    SIGTERM after the test, which fails unless it exits 0 and leaves no process behind."""
    from sockkit import catalog
    from sockkit.api import background

    options = dict(sockkit_options)
    if catalog.needs_of(sockkit_service).tls and "tls_cert" not in options:
        cert, key = request.getfixturevalue("sockkit_certificate")
        options.update(tls_cert=str(cert), tls_key=str(key))
    model = catalog.MODELS[sockkit_model].configured(fork=bool(options.get("fork")))
    refused = catalog.refusal(sockkit_service, model, tls="tls_cert" in options)
    if refused:
        pytest.skip(refused)
    with background(sockkit_service, model=sockkit_model, **options) as server:
        yield server
