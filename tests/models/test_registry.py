"""The model registry: one entry per model, one entry point shape, and traits that the rest reads.

These check the registry against the code it names (no sockets): every entry loads, every model
module's entry point is ``serve(server, **options)``, and the traits agree with each other and with
what ``serve --help`` shows.
"""

from __future__ import annotations

import inspect
import subprocess

import pytest

from sockkit import affinity
from sockkit.catalog import MODELS, load, models_where
from sockkit.testing import sockkit_command


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_has_the_same_entry_point(name: str) -> None:
    """Each entry names a module's ``serve``, whose first parameter is the server and whose other
    parameters are exactly the entry's keyword options."""
    model = MODELS[name]
    assert model.name == name
    function = model.serve.partition(":")[2]
    assert function == "serve", f"{name}: the entry point of every model module is serve()"
    entry = load(model.serve)
    params = list(inspect.signature(entry).parameters.values())
    assert params[0].name == "server"
    keywords = {p.name for p in params[1:]}
    assert set(dict(model.options)) <= keywords, f"{name}: options the entry point does not take"
    assert all(p.kind is p.KEYWORD_ONLY for p in params[1:])


def test_traits_agree_with_each_other() -> None:
    for model in MODELS.values():
        assert model.shares_memory == (not model.forks)
        if model.reuse_port:
            assert model.workers == "processes", "SO_REUSEPORT is for worker processes binding their own sockets"
        if model.pin_cpu:
            assert model.threads, "pinning helps threads that share one GIL, nothing else"
        assert model.summary and model.bench_peer
    assert models_where(concurrent=False) == ["sequential"]
    assert set(models_where(fork_per_client=True)) == {"fork", "fork-signal"}


def test_socketserver_with_fork_is_a_process_per_client() -> None:
    """``--fork`` changes the traits it is run with: no longer threads sharing memory, never pinned."""
    plain, forked = MODELS["socketserver"], MODELS["socketserver"].configured(fork=True)
    assert plain.threads and plain.shares_memory and plain.pin_cpu
    assert forked.forks and not forked.threads and not forked.shares_memory and not forked.pin_cpu
    assert MODELS["thread"].configured(fork=True) is MODELS["thread"]  # --fork means nothing to it
    assert affinity.choose("auto", forked, tls=False) is None


def test_serve_help_lists_every_model_with_its_summary() -> None:
    done = subprocess.run(sockkit_command("serve", "echo", "--help"), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    flat = " ".join(done.stdout.split())
    for name, model in MODELS.items():
        assert f"{name} {' '.join(model.summary.split())}" in flat
