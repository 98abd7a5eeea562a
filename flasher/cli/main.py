"""The `flasher` command: global options, command registration, error-to-exit-code mapping.

Each command module exposes `register(groups)`, where `groups` maps a group name ("" for the
top level, "os", "image", "config", "cache", "sandbox") to an argparse sub-parsers object; a
command sets `handler=fn(args, ctx) -> int` with `set_defaults`. A new module is listed in
COMMAND_MODULES under its top-level word (and a new group in GROUPS).

Global options (`--json`, `-v`, `--sandbox`, `--api-url`, `--token`) are accepted before or after
the command and its subcommand, as balena and gh users type them: once every module has
registered, `_share_global_options` adds them to every command and group parser in the tree, so
a registered command inherits them without doing anything. There they default to
argparse.SUPPRESS, so an option left out after the command never overwrites one given before it
(`-v` counts add up across both places). A command need not (and should not) define them; one
that does keeps its own, which must then default to SUPPRESS too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from flasher import __version__
from flasher.cli.context import CliContext
from flasher.cli.entry import code_loaded, command_of
from flasher.cli.output import Output
from flasher.errors import EXIT_CANCELLED, EXIT_OK, EXIT_USAGE, Cancelled, FlasherError

# The modules that define each top-level command: a run imports only those of its command
# (the full set only for help or an unknown command), which keeps start-up short.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "device-types": ("flasher.cli.catalog_cmds",),
    "os": ("flasher.cli.catalog_cmds", "flasher.cli.image_cmds", "flasher.cli.cache_cmds"),
    "image": ("flasher.cli.image_cmds",),
    "config": ("flasher.cli.config_cmds",),
    "cache": ("flasher.cli.cache_cmds",),
    "sandbox": ("flasher.cli.sandbox_cmds",),
    "drives": ("flasher.cli.drives_cmds",),
    "flash": ("flasher.cli.flash_cmds",),
    "bench": ("flasher.cli.bench_cmds",),
    "release-update": ("flasher.cli.release_update_cmds",),
    "device": ("flasher.cli.device_cmds",),
}
# What `flasher --help` lists for the commands outside GROUPS, so the top-level help needs no
# command module (a test keeps these equal to what the modules register).
COMMAND_HELP = {
    "device-types": "list the device types balenaOS supports",
    "drives": "list the drives that can be flashed",
    "flash": "write a configured image to cards or files and verify them",
    "bench": "flash every card inserted into the bench's slots, one report line per card",
    "release-update": "what updating a fleet between two releases costs; build its deltas ahead",
    "device": "talk to a device's supervisor",
}
_VERBOSE_AFTER = "verbose_after_command"

GROUPS = {
    "os": "balenaOS versions, downloads and image configuration",
    "image": "inspect disk images",
    "config": "generate config.json",
    "cache": "the downloaded-image cache",
    "sandbox": "the built-in offline balena API",
}


class _Parser(argparse.ArgumentParser):
    """Exits with the usage code (2) and a hint, as every other error path does."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message}\nhint: run '{self.prog} --help'\n")


def _modules_for(argv: Sequence[str] | None) -> tuple[str, ...] | None:
    """The modules to import for `argv`; None when it names no command (`flasher --help`,
    a bare `flasher`, a misspelt command): the top-level parser is built from COMMAND_HELP
    alone."""
    command = command_of(argv) if argv is not None else None
    if command in COMMAND_MODULES:
        return COMMAND_MODULES[command]
    if argv is not None:
        return None  # no command, or an unknown one: the usage error lists COMMAND_HELP too
    return tuple(dict.fromkeys(m for mods in COMMAND_MODULES.values() for m in mods))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`'s command (every command when `argv` is None or names none)."""
    parser = _Parser(
        prog="flasher",
        description="Provision balenaOS devices: pick an OS, configure it, flash and verify.",
    )
    parser.add_argument("--version", action="version", version=f"flasher {__version__}")
    _add_global_options(parser, top_level=True)
    top = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    groups: dict[str, Any] = {"": top}
    for name, help_text in GROUPS.items():
        group = top.add_parser(name, help=help_text, description=help_text)
        groups[name] = group.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        group.set_defaults(handler=_group_help(group))
    modules = _modules_for(argv)
    if modules is None:
        for name, help_text in COMMAND_HELP.items():
            top.add_parser(name, help=help_text)
        return parser
    for module_name in modules:
        importlib.import_module(module_name).register(groups)
    _share_global_options(parser)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """The global options; after a command they default to SUPPRESS (see the module docstring)."""
    unset: dict[str, Any] = {} if top_level else {"default": argparse.SUPPRESS}
    taken = parser._option_string_actions
    if "--sandbox" not in taken:
        parser.add_argument(
            "--sandbox",
            action="store_true",
            help="use the built-in offline balena API (no account, no network)",
            **unset,
        )
    if "--api-url" not in taken:
        parser.add_argument(
            "--api-url", metavar="URL", help="balena API base URL (env FLASHER_API_URL)", **unset
        )
    if "--token" not in taken:
        parser.add_argument(
            "--token",
            metavar="TOKEN",
            help="balena API token (prefer env BALENA_API_KEY or `balena login`)",
            **unset,
        )
    if "--json" not in taken:
        parser.add_argument(
            "--json", action="store_true", help="machine-readable JSON output", **unset
        )
    if "-v" not in taken:
        parser.add_argument(
            "-v",
            "--verbose",
            action="count",
            dest="verbose" if top_level else _VERBOSE_AFTER,
            default=0 if top_level else argparse.SUPPRESS,
            help="more log output",
        )


def _share_global_options(parser: argparse.ArgumentParser) -> None:
    """Adds the global options to every command and group parser below `parser`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                if "-" not in sub.prefix_chars:
                    continue  # a command that parses its own words (release-update)
                _add_global_options(sub, top_level=False)
                _share_global_options(sub)


def _verbosity(args: argparse.Namespace) -> int:
    return int(args.verbose) + int(getattr(args, _VERBOSE_AFTER, 0))


def _group_help(group: argparse.ArgumentParser) -> Any:
    def show(_args: argparse.Namespace, _ctx: CliContext) -> int:
        group.print_help(sys.stderr)
        return EXIT_USAGE

    return show


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
    import logging  # not needed by --help and usage errors, which exit above

    from flasher.heap import tune_for_streaming

    tune_for_streaming()

    logging.basicConfig(
        level=logging.WARNING - 10 * min(_verbosity(args), 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    out = Output(json_mode=args.json)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    ctx = CliContext(args=args, out=out)
    if not getattr(args, "resumes_collector", False):
        code_loaded()
    try:
        return int(handler(args, ctx))
    except FlasherError as err:
        out.error(err)
        return err.exit_code
    except KeyboardInterrupt:
        out.error(Cancelled("Interrupted."))
        return EXIT_CANCELLED
    except BrokenPipeError:
        # The reader went away (`flasher … | head`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        ctx.close()
