"""Options shared by commands, generated from the Config fields (one place for each option)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, overload

from ..config import Config, apply_overrides, load_toml
from ..textvalues import parse_model_arg

_N = TypeVar("_N")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with a suggestion) and exit status 2."""

    def error(self, message: str, more_flags: tuple[str, ...] = ()) -> NoReturn:
        if "unrecognized arguments" in message:
            flags = [s for a in self._actions for s in a.option_strings] + list(more_flags)
            bad = message.split(":", 1)[1].split()
            hints = [difflib.get_close_matches(b.split("=")[0], flags, n=1) for b in bad]
            hint = ", ".join(h[0] for h in hints if h)
            if hint:
                message += f" (did you mean {hint}?)"
        print(f"{self.prog}: error: {message}; see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)

    # argparse's own overloads: a namespace passed in is the one returned.
    @overload
    def parse_args(self, args: Iterable[str] | None = None, namespace: None = None) -> argparse.Namespace: ...
    @overload
    def parse_args(self, args: Iterable[str] | None, namespace: _N) -> _N: ...
    @overload
    def parse_args(self, *, namespace: _N) -> _N: ...
    def parse_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> Any:
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            # argparse reports a command's unknown flags from the top parser, whose few
            # flags make poor hints: report them from the command's own parser instead.
            parser = self._command_parser(namespace)
            parser = parser if isinstance(parser, OneLineParser) else self
            own_flags = tuple(s for a in self._actions for s in a.option_strings)
            parser.error(f"unrecognized arguments: {' '.join(extras)}", own_flags)
        return namespace

    def _command_parser(self, namespace: argparse.Namespace) -> argparse.ArgumentParser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                command = getattr(namespace, action.dest, None)
                return None if command is None else action.choices.get(command)
        return None


if TYPE_CHECKING:
    # What each command's add_parser(subparsers) is given.
    SubParsers = argparse._SubParsersAction[OneLineParser]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _type_of(field: dataclasses.Field[Any]) -> type:
    return {"str": str, "int": int, "float": float, "bool": bool}[str(field.type).split("|")[0].strip()]


def add_config_flags(
    parser: argparse.ArgumentParser, skip: tuple[str, ...] = (), default_text: str | None = None
) -> None:
    """One flag per Config field, grouped by section; unset flags leave the config alone.
    ``default_text`` replaces every "(default: X)" where the default is not Config's own."""
    groups: dict[str, Any] = {}
    for f in fields(Config):
        if f.name in skip:
            continue
        section = f.metadata["section"]
        group = groups.get(section) or groups.setdefault(
            section, parser.add_argument_group(section.replace("_", " "))
        )
        if f.name == "model_args":  # a table: one repeatable KEY=VALUE flag
            group.add_argument(
                "--model-arg",
                dest="cfg_model_args",
                action="append",
                default=argparse.SUPPRESS,
                metavar="KEY=VALUE",
                help="keyword argument of the model's factory, VALUE a TOML literal (repeatable; "
                "config: [model.args])",
            )
            continue
        kind = _type_of(f)
        if default_text is not None:
            default = f" (default: {default_text})"
        else:
            default = f" (default: {f.default})" if f.default is not None else ""
        common = dict(dest=f"cfg_{f.name}", default=argparse.SUPPRESS, help=f.metadata["help"] + default)
        if kind is bool:
            group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **common)
        else:
            metavar = (
                f.name.upper() if not f.metadata["choices"] else "{" + ",".join(f.metadata["choices"]) + "}"
            )
            if f.metadata.get("bare") is not None:  # --pretrained alone: --pretrained default
                common.update(nargs="?", const=f.metadata["bare"])
            group.add_argument(_flag(f.name), type=kind, metavar=metavar, **common)
    parser.add_argument(
        "--config", metavar="FILE.toml", help="read options from a TOML file (flags override it)"
    )


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    config = base or Config()
    if getattr(args, "config", None):
        config = load_toml(args.config, config)
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}
    if "model_args" in overrides:  # flags over the file's [model.args]
        overrides["model_args"] = {**config.model_args, **dict(map(parse_model_arg, overrides["model_args"]))}
    return apply_overrides(config, overrides, "command-line flags")


def add_output_flags(
    parser: argparse.ArgumentParser,
    what: str = "run",
    json_help: str | None = None,
    resume_help: str | None = None,
    holds: str = "run folders and index.sqlite",
) -> None:
    """--name, --runs-dir (the folder that ``holds``), --json and --quiet; and --resume NAME for a
    command that finishes its own interrupted folder."""
    parser.add_argument(
        "--name",
        help=f"{what} folder name: letters and digits of any script, '.', '_', '-' (default: generated)",
    )
    if resume_help:
        parser.add_argument("--resume", metavar="NAME", help=resume_help)
    parser.add_argument("--runs-dir", default="runs", help=f"folder of {holds} (default: runs)")
    parser.add_argument(
        "--json",
        action="store_true",
        help=json_help or f"print the {what}'s final summary as one JSON object",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def eta_line(shown: bool) -> Callable[[str, int, int], None]:
    """``show(part, done, total)``: one line on stderr, rewritten in place, with the time left
    at the pace so far (nothing where not ``shown``: piped, or --quiet)."""
    started = time.monotonic()

    def show(part: str, done: int, total: int) -> None:
        if shown:
            elapsed = time.monotonic() - started
            left = f", about {elapsed / done * (total - done):.0f} s left" if done else ""
            print(f"\r[{done}/{total}] {part}{left}\x1b[K", end="", file=sys.stderr, flush=True)

    return show
