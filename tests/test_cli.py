"""The command line's dispatch: one command module imported per run, an overview that imports none."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sockkit import cli


def registered_commands() -> dict[str, str]:
    """Each command of the full parser (every module's register()) and its help line."""
    subparsers = cli.build_full_parser()._subparsers._group_actions[0]
    return {action.dest: action.help for action in subparsers._choices_actions}


def test_overview_lists_exactly_the_registered_commands_with_their_own_help():
    """The summaries ``sockkit --help`` shows without importing a module are the modules' own help."""
    registered = registered_commands()
    assert {name: summary for name, (_, summary) in cli.COMMANDS.items()} == registered


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_each_command_gets_its_modules_real_parser(name):
    """Dispatch builds the module's own parser for the command (with its handler), not a summary."""
    def real(parser) -> bool:  # runs something, or holds subcommands that do (serve, bench)
        return callable(parser.get_default("handler")) or parser._subparsers is not None

    subparsers = cli.build_parser(name)._subparsers._group_actions[0]
    assert real(subparsers.choices[name])
    overview = cli.build_parser(None)._subparsers._group_actions[0]
    assert not real(overview.choices[name])


def run_cli(*argv: str, probe_modules: bool = False) -> subprocess.CompletedProcess:
    """``sockkit ARGV`` in a fresh interpreter; with ``probe_modules``, also print the command
    modules it imported (after the parser exits)."""
    code = ("import sys\nfrom sockkit import cli\n"
            "try:\n    code = cli.main(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
            + ("print('IMPORTED', sorted(m for m in sys.modules if m.startswith('sockkit.commands.')))\n"
               if probe_modules else "")
            + "sys.exit(code)\n")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)


def test_help_and_version_import_no_command_module():
    done = run_cli("--help", probe_modules=True)
    assert done.returncode == 0
    for name in cli.COMMANDS:
        assert f"    {name} " in done.stdout
    assert "IMPORTED []" in done.stdout
    version = run_cli("--version", probe_modules=True)
    assert version.returncode == 0 and version.stdout.startswith("sockkit ")
    assert "IMPORTED []" in version.stdout


def test_a_command_imports_only_its_own_module():
    done = run_cli("ls", "--help", probe_modules=True)
    assert done.returncode == 0
    assert "usage: sockkit ls" in done.stdout
    assert "IMPORTED ['sockkit.commands.get', 'sockkit.commands.progress']" in done.stdout


def test_unknown_command_is_a_usage_error():
    done = run_cli("fetch")
    assert done.returncode == 2
    assert "invalid choice: 'fetch'" in done.stderr


def test_no_command_is_a_usage_error():
    done = run_cli()
    assert done.returncode == 2
    assert "required: COMMAND" in done.stderr


@pytest.mark.parametrize("collecting", [True, False])
def test_main_leaves_the_cyclic_gc_as_it_found_it(collecting):
    """main() loads the command with the GC off (start-up), then switches it back on: only if it was on."""
    code = ("import gc, sys\nfrom sockkit import cli\n"
            f"{'' if collecting else 'gc.disable()'}\n"
            "try:\n    cli.main(['ls', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('ENABLED', gc.isenabled())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert f"ENABLED {collecting}" in done.stdout, done.stderr


OUT_OF_RANGE = [
    ("serve", "echo", "--port", "65537"), ("serve", "getfile", "--port", "99999"), ("serve", "echo", "--port", "-1"),
    ("get", "f", "--port", "65536"), ("ls", "--port", "99999"), ("put", "README.md", "--port", "70000"),
    ("get", "f", "--port", "0"), ("echo", "localhost:65537"), ("echo", "[::1]:99999"), ("echo", "--port", "65536"),
    ("probe", "127.0.0.1", "65537"), ("load", "127.0.0.1:65537", "-d", "1"), ("proxy", "65537", "127.0.0.1:1"),
    ("proxy", "127.0.0.1:99999", "127.0.0.1:1"), ("proxy", "0", "127.0.0.1:65537"), ("proxy", "0", "127.0.0.1:0"),
    ("gui", "--port", "65537"),
]


@pytest.mark.parametrize("argv", OUT_OF_RANGE, ids=" ".join)
def test_a_port_out_of_range_is_a_usage_error_everywhere(argv):
    """The resolver wraps ports past 65535 (65537 is 1, 99999 is 34463): every command refuses them
    as a usage error (exit 2, one line naming the range) before listening or connecting."""
    done = run_cli(*argv)
    assert done.returncode == 2, done.stderr
    assert "65535" in done.stderr and "Traceback" not in done.stderr
    assert "listening" not in done.stdout


def test_the_chapter_getfile_refuses_a_port_out_of_range():
    done = subprocess.run([sys.executable, "-m", "sockkit.commands.getfile_chapter", "-file", "x", "-port", "65537"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "65535" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("service", ["echo", "getfile"])
def test_serve_help_says_what_the_signals_do_and_what_insecure_allows(service):
    """A new user reads ``sockkit serve SERVICE --help``: SIGHUP's restart and socket activation are
    there, and --insecure says it is needed with a token too (clear text beyond loopback)."""
    done = run_cli("serve", service, "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "SIGHUP restart without refusing anyone" in text
    assert "LISTEN_FDS started with sockets (systemd socket activation" in text
    assert "--insecure allow listening beyond loopback without TLS, token or not" in text


@pytest.mark.parametrize(("args", "said"), [
    (["getfile", "--root", "/nonexistent-qa"],
     "sockkit: cannot serve --root /nonexistent-qa: no such file or directory"),
    (["getfile", "--root", __file__], f"sockkit: cannot serve --root {__file__}: not a directory"),
    (["echo", "--tls-cert", "/nope.pem", "--tls-key", "/nope.key"],
     "sockkit: cannot load TLS certificate /nope.pem / key /nope.key: no such file or directory"),
    (["echo", "--tls-cert", __file__, "--tls-key", __file__],
     f"sockkit: cannot load TLS certificate {__file__} / key {__file__}: not a PEM certificate chain and its "
     "private key"),
])
def test_serve_names_the_path_it_cannot_use(args, said):
    """One line naming the option's path and what is wrong (was '[Errno 2] No such file or directory' for
    the certificate, or the errno repr for --root)."""
    done = run_cli("serve", *args, "--port", "0")
    assert done.returncode == 2 and done.stderr.startswith(said), done.stderr


def test_byte_options_take_sizes_as_the_proxy_does():
    """``--line-memory 64MiB`` (as its help speaks of it) was 'invalid int value'; every BYTES option now
    reads sizes the way ``sockkit proxy``'s do (binary multiples), and refuses nonsense as a usage error."""
    parser = cli.build_parser("serve")
    args = parser.parse_args(["serve", "echo", "--lines", "--max-line", "64k", "--line-memory", "64MiB"])
    assert (args.max_line, args.line_memory) == (64 << 10, 64 << 20)
    assert parser.parse_args(["serve", "getfile", "--max-upload", "1.5G"]).max_upload == 3 << 29
    assert parser.parse_args(["serve", "getfile", "--max-upload", "1000"]).max_upload == 1000
    done = run_cli("serve", "echo", "--line-memory", "lots")
    assert done.returncode == 2 and "argument --line-memory: 'lots' is not a size" in done.stderr
