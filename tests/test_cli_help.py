"""Every option of every ``mlops`` command says what it is for in ``--help``."""

from __future__ import annotations

import argparse

from mlops.cli.main import build_parser


def commands(parser: argparse.ArgumentParser, path: str = "mlops"):
    """``(command path, parser)`` for the parser and every subcommand below it, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{path} {name}")


def test_every_option_of_every_command_has_a_help_line():
    """Options and positionals alike; -h is argparse's own, and a COMMAND placeholder is listed through its
    choices (each with its help line: the next test). ``help=SUPPRESS`` hides an option on purpose."""
    missing = []
    walked = list(commands(build_parser()))
    for path, parser in walked:
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if action.help != argparse.SUPPRESS and not (action.help or "").strip():
                missing.append(f"{path}: {'/'.join(action.option_strings) or action.dest}")
    assert len(walked) > 20  # the walk reached the subcommands (models compare among them)
    assert "mlops models compare" in {path for path, _ in walked}
    assert missing == []


def test_every_subcommand_has_a_help_line():
    missing = []
    for path, parser in commands(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                listed = {choice.dest for choice in action._choices_actions if (choice.help or "").strip()}
                missing += [f"{path} {name}" for name in action.choices if name not in listed]
    assert missing == []
