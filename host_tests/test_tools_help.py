"""`python -m tools ... --help` speaks to the user of each command: what it does, its options,
its exit status; never how the tools are laid out inside."""
import re
import subprocess
import sys

import pytest

from conftest import REPO

COMMANDS = [
    (),
    ("serve",), ("demo",), ("deploy",), ("token",),
    ("bench",),
    ("campaign",),
    ("package",), ("package", "fota"), ("package", "delta"), ("package", "app"), ("package", "mip"),
]
# words about the inside of the tools, not about using them
INTERNAL = ("SUBCOMMANDS", "module", "configure(", "add a", "tools/", "sim/", "host_tests")


def run_help(command):
    return subprocess.run([sys.executable, "-m", "tools", *command, "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def options(text):
    """Every --option the usage line offers."""
    usage = text.split("\n\n", 1)[0]
    return sorted(set(re.findall(r"(--[a-z][a-z0-9-]*)", usage)) - {"--help"})


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "tools")
def test_help_says_what_the_command_does_its_options_and_exit_status(command):
    result = run_help(command)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    body = text.split("\n\n", 1)[1]  # past the usage line
    for option in options(text):
        assert option in body, "%s is in the usage but not explained" % option
    assert re.search(r"exit\s+status", text, re.I), "no exit status"
    for word in INTERNAL:
        assert word.lower() not in text.lower(), "%r in the help of %s" % (word, " ".join(command) or "tools")


def test_every_command_and_kind_is_covered():
    """A new command or package kind is added to COMMANDS above."""
    listed = run_help(()).stdout
    commands = re.findall(r"^    (\w+)\s", listed, re.M)
    kinds = re.findall(r"^    (\w+)\s", run_help(("package",)).stdout, re.M)
    covered = COMMANDS
    assert {c for c in covered if len(c) == 1} == {(c,) for c in commands}
    assert {c for c in covered if len(c) == 2} == {("package", k) for k in kinds}
