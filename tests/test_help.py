"""Every ``xbc`` command's ``--help`` ends with working examples, and usage errors say what to try next.

The examples live in ``xbcompiler/cli/usage_examples.py``; each line is parsed here by the real parser, so
a renamed flag or command fails this test rather than leaving a stale example behind.
"""

import argparse
import shlex

import pytest

from xbcompiler.cli import build_parser, main
from xbcompiler.cli.usage_examples import EXAMPLES, OVERVIEW, examples_epilog


def command_names() -> list[str]:
    """Every registered sub-command (``sweep-report`` included), from the parser itself."""
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


COMMANDS = command_names()
ALL_EXAMPLES = [(name, ex.line) for name, examples in EXAMPLES.items() for ex in examples]


def test_every_command_has_examples_and_every_entry_is_a_command():
    assert "sweep-report" in COMMANDS and "demo" in COMMANDS and "export" in COMMANDS
    assert set(EXAMPLES) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_0_with_an_examples_section(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: xbc {command} ")
    section = out[out.index("\nexamples:\n"):].splitlines()[2:]
    lines = [ln.strip() for ln in section if ln.strip().startswith(f"xbc {command} ") or ln.strip() == f"xbc {command}"]
    assert lines and lines == [ex.line for ex in EXAMPLES[command]]
    comments = [ln.strip() for ln in section if ln.strip().startswith("# ")]
    assert len(comments) == len(lines)  # one comment above every command line


@pytest.mark.parametrize(("command", "line"), ALL_EXAMPLES, ids=[line for _, line in ALL_EXAMPLES])
def test_every_example_parses_as_its_command(command, line):
    words = shlex.split(line)
    assert words[:2] == ["xbc", command]
    args = build_parser().parse_args(words[1:])
    assert args.command == command and callable(args.func)


def test_example_comments_are_one_line_and_lines_are_shell_safe():
    for examples in EXAMPLES.values():
        for ex in examples:
            assert ex.comment and "\n" not in ex.comment and "\n" not in ex.line
            assert shlex.join(shlex.split(ex.line)) == ex.line  # pastes into a shell as written


def test_examples_epilog_layout():
    text = examples_epilog("demo")
    assert text.splitlines()[:3] == ["examples:", f"  # {EXAMPLES['demo'][0].comment}", "  xbc demo"]
    assert examples_epilog("no-such-command") is None


def test_top_level_help_shows_a_first_session(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert OVERVIEW in out and "xbc COMMAND --help" in out
    for line in OVERVIEW.splitlines():
        if line.startswith("  xbc "):
            build_parser().parse_args(shlex.split(line.split("#")[0])[1:])


def test_description_shows_a_literal_percent(capsys):
    assert main(["sweep-report", "--help"]) == 0
    out = capsys.readouterr().out
    assert "95% interval" in out and "95%%" not in out


@pytest.mark.parametrize(("argv", "prog"), [
    (["compile"], "xbc compile"),                               # required arguments missing
    (["verify", "out"], "xbc verify"),                          # --model missing
    (["prune", "m.py:f", "--target", "tiny", "-o", "d", "--grain", "cell"], "xbc prune"),  # bad choice
    (["demo", "--no-such-flag"], "xbc"),                        # unknown flag: reported by the top level
    (["no-such-command"], "xbc"),
])
def test_usage_errors_end_with_the_help_to_try(argv, prog, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{prog}: error: ") and last.endswith(f"(try {prog} --help)")


def test_missing_command_says_what_to_try(capsys):
    assert main([]) == 2
    assert "(try xbc --help)" in capsys.readouterr().err
