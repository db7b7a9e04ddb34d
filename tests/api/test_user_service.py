"""A user's service, in a file outside the repository, under every model it may run under:
through ``sockkit serve MODULE:ATTRIBUTE``, through ``sockkit.serve()`` in the user's own script,
and through ``sockkit.background()``; the models that cannot give it what it needs refuse it at
start with a sentence saying why."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import sockkit
from sockkit.testing import MODELS, exchange_line, read_line, running, sockkit_command

HERE = Path(__file__).parent
SHARED_STATE_MODELS = ["sequential", "thread", "socketserver", "pool", "select", "asyncio", "uvloop"]
#: The models that run clients in several processes, and how the refusal says so.
PROCESS_MODELS = {"fork": "the fork model runs each client in its own process",
                  "fork-signal": "the fork-signal model runs each client in its own process",
                  "prefork": "the prefork model runs its clients in several worker processes"}


@pytest.fixture
def project(tmp_path) -> Path:
    """The user's project: their service module and a script serving it with ``sockkit.serve()``."""
    shutil.copy(HERE / "user_services.py", tmp_path / "usersvc.py")
    (tmp_path / "serve_it.py").write_text(textwrap.dedent("""\
        import sys

        import sockkit
        import usersvc

        service, model = getattr(usersvc, sys.argv[1]), sys.argv[2]
        try:
            sockkit.serve(service, model=model, port=0, quiet=True)
        except ValueError as exc:
            sys.exit(f"serve_it: {exc}")
        """))
    return tmp_path


def visitors_seen(port: int, count: int = 3) -> list[bytes]:
    seen = []
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            seen.append(read_line(sock))
    return seen


VISITORS = [b"you are visitor 1\n", b"you are visitor 2\n", b"you are visitor 3\n"]


@pytest.mark.parametrize("model", MODELS)
def test_cli_runs_a_users_service_under_every_model(project, model):
    """`sockkit serve usersvc:shout` from the user's directory, with the model options."""
    with running("usersvc:shout", "--model", model, "--port", "0", cwd=project) as server:
        assert server.lines[0] == f"sockkit shout server ({model}) listening on 127.0.0.1:{server.port}"
        assert exchange_line(server.port, b"hello there") == b"HELLO THERE\n"


@pytest.mark.parametrize("model", MODELS)
def test_serve_runs_a_users_service_under_every_model(project, model):
    """The user's own script calling sockkit.serve(): the same listening line, SIGTERM drains, exit 0."""
    with running(command=[sys.executable, "serve_it.py", "shout", model], cwd=project) as server:
        assert server.lines[0] == f"sockkit shout server ({model}) listening on 127.0.0.1:{server.port}"
        assert exchange_line(server.port, b"quiet please") == b"QUIET PLEASE\n"


@pytest.mark.parametrize("model", SHARED_STATE_MODELS)
def test_shared_state_is_shared_under_the_permitted_models(project, model):
    """Every client of one server sees one count, through the command line and through serve()."""
    with running("usersvc:visitors", "--model", model, "--port", "0", "--quiet", cwd=project) as server:
        assert visitors_seen(server.port) == VISITORS
    with running(command=[sys.executable, "serve_it.py", "visitors", model], cwd=project) as server:
        assert visitors_seen(server.port) == VISITORS


@pytest.mark.parametrize("model", PROCESS_MODELS)
def test_shared_state_is_refused_by_the_process_models(project, model):
    """A model that would split the state between processes refuses at start, before binding, and
    says why and what to use instead."""
    expected = (f"the visitors service keeps state shared by all its clients, but {PROCESS_MODELS[model]}, where "
                "each would see a different copy of it; run it under sequential, thread, socketserver, pool, select, "
                "asyncio or uvloop")
    done = subprocess.run(sockkit_command("serve", "usersvc:visitors", "--model", model, "--port", "0"),
                          cwd=project, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"sockkit: {expected}\n")
    done = subprocess.run([sys.executable, "serve_it.py", "visitors", model], cwd=project, capture_output=True,
                          text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"serve_it: {expected}\n")


def test_socketserver_with_fork_is_refused_too(project):
    done = subprocess.run(sockkit_command("serve", "usersvc:visitors", "--model", "socketserver", "--fork"),
                          cwd=project, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "but the socketserver model with --fork runs each client in its own process" in done.stderr
    assert "run it under sequential, thread, socketserver without --fork, pool" in done.stderr


def test_a_factory_gets_the_parsed_options_and_adds_its_own(project):
    """`usersvc:make_visitors` is called with the parsed options, including an option it added."""
    with running("usersvc:make_visitors", "--greeting", "welcome, guest", "--port", "0", "--model", "thread",
                 cwd=project) as server:
        assert visitors_seen(server.port, 1) == [b"welcome, guest 1\n"]
    done = subprocess.run(sockkit_command("serve", "usersvc:make_visitors", "--help"), cwd=project,
                          capture_output=True, text=True, timeout=30)
    assert "visitors, with a greeting of your choice" in done.stdout and "--greeting" in done.stdout


@pytest.mark.parametrize(("target", "error"), [
    ("nosuchmodule:service", "cannot load service nosuchmodule:service: No module named 'nosuchmodule'"),
    ("usersvc:nothing", "cannot load service usersvc:nothing: module usersvc has no nothing"),
])
def test_a_target_that_cannot_be_loaded_is_one_clear_line(project, target, error):
    done = subprocess.run(sockkit_command("serve", target), cwd=project, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == f"sockkit serve: error: {error}"


def test_needs_tls(project, certificate):
    """A service that needs TLS is refused without a certificate and under select, and served over TLS."""
    import ssl

    done = subprocess.run(sockkit_command("serve", "usersvc:secret", "--model", "thread"), cwd=project,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr == ("sockkit: the secret service needs TLS: give it a certificate and its key "
                           "(--tls-cert, --tls-key)\n")
    cert, key = certificate
    done = subprocess.run(sockkit_command("serve", "usersvc:secret", "--model", "select", "--tls-cert", str(cert),
                                          "--tls-key", str(key)), cwd=project, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert "the select model does not do TLS" in done.stderr
    with running("usersvc:secret", "--model", "thread", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key),
                 cwd=project) as server:
        context = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"psst\n")
            assert read_line(sock) == b"PSST\n"


@pytest.mark.parametrize("model", MODELS)
def test_background_runs_every_model(model):
    """sockkit.background(): a forked child serving the object itself (not importable by name)."""
    from tests.api.user_services import ShoutService, Visitors

    with sockkit.background(ShoutService(), model=model, quiet=True) as server:
        assert server.address == ("127.0.0.1", server.port)
        assert exchange_line(server.port, b"abc") == b"ABC\n"
        pid = server.pid
    assert server.proc.returncode == 0 and not Path(f"/proc/{pid}").exists()
    if model in SHARED_STATE_MODELS:
        with sockkit.background(Visitors(), model=model, quiet=True) as server:
            assert visitors_seen(server.port) == VISITORS
    else:
        with pytest.raises(ValueError, match="keeps state shared by all its clients"), \
                sockkit.background(Visitors(), model=model):
            pass


def test_background_from_a_thread():
    """background() works from any thread; serve() says it needs the main one."""
    from tests.api.user_services import ShoutService

    results: list[object] = []

    def use() -> None:
        try:
            with sockkit.background(ShoutService(), model="fork", quiet=True) as server:
                results.append(exchange_line(server.port, b"x"))
            sockkit.serve(ShoutService(), port=0)
        except Exception as exc:
            results.append(exc)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join(60)
    assert results[0] == b"X\n"
    assert isinstance(results[1], RuntimeError) and "runs in the main thread" in str(results[1])


def test_background_raises_refusals_and_bind_errors_before_forking():
    from tests.api.user_services import ShoutService

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="already in use"), sockkit.background(ShoutService(),
                                                                                 port=taken.getsockname()[1]):
            pass
    with pytest.raises(ValueError, match="unknown model 'nope'"), sockkit.background(ShoutService(), model="nope"):
        pass
    with pytest.raises(TypeError, match="unknown limit idle"), sockkit.background(ShoutService(), idle=3):
        pass
    with pytest.raises(ValueError, match="port '65537' is out of range"), \
            sockkit.background(ShoutService(), port=65537):
        pass
    # A limit that would make the server useless (every client busy, every connection closed at once).
    with pytest.raises(ValueError, match="--max-connections must be at least 1, not 0"), \
            sockkit.background(ShoutService(), max_connections=0):
        pass
    with pytest.raises(ValueError, match="--idle-timeout must be more than 0"), \
            sockkit.background(ShoutService(), idle_timeout=0):
        pass


@pytest.mark.parametrize("option", ["--max-connections", "--workers", "--idle-timeout", "--request-timeout"])
def test_a_useless_limit_is_a_usage_error(option):
    """``--max-connections 0`` (read as "no limit"?) served nobody: every client was told busy."""
    done = subprocess.run(sockkit_command("serve", "echo", option, "0", "--port", "0"),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and f"sockkit: {option} must be" in done.stderr, done.stderr


def test_serve_list_and_help_show_installed_services(tmp_path):
    """A package registering `sockkit.services` entry points is listed by --list and --help, and runs."""
    shutil.copy(HERE / "user_services.py", tmp_path / "usersvc.py")
    info = tmp_path / "usersvc_pkg-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: usersvc-pkg\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text("[sockkit.services]\nshouter = usersvc:shout\nbroken = usersvc:gone\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    listed = subprocess.run(sockkit_command("serve", "--list"), capture_output=True, text=True, env=env, timeout=30)
    assert listed.returncode == 0
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert "shout every chunk back in capitals" in rows["shouter"] and "(usersvc-pkg 1.2)" in rows["shouter"]
    assert "broken" in rows["broken"] and "(usersvc-pkg 1.2)" in rows["broken"]
    assert {"echo", "getfile", "MODULE:ATTRIBUTE"} <= set(rows)
    helped = subprocess.run(sockkit_command("serve", "--help"), capture_output=True, text=True, env=env, timeout=30)
    assert "shouter" in helped.stdout
    with running("shouter", "--port", "0", "--model", "select", env=env) as server:
        assert server.lines[0].startswith("sockkit shout server (select) listening on")
        assert exchange_line(server.port, b"ok") == b"OK\n"
    broken = subprocess.run(sockkit_command("serve", "broken", "--port", "0"), capture_output=True, text=True,
                            env=env, timeout=30)
    assert broken.returncode == 2 and "cannot load service broken from usersvc-pkg 1.2" in broken.stderr
