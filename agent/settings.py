"""Every setting declared once; the command line, the environment and a TOML file read from that.

A role's settings are declared where their values live, as ``setting(...)``
fields of its attrs config class (``AgentConfig.poll_interval``); inputs that
are not configuration themselves (``--api-key-file``, ``--config``) are
standalone :class:`Setting` objects. One declaration gives the flag, its
``--help`` line and group, its environment variable (``FFRTMP_<FLAG>``), its
key in a ``--config`` file and its default.

:class:`SettingsParser` reads them, first found wins: the command line, the
environment, the ``--config`` file, the default. :func:`build` then makes the
config object from what it read, so no setting is copied by hand. A bad value
is reported as coming from where it came from (``FFRTMP_MAX_CONCURRENT_JOBS=0:
must be at least 1``), in one line, with exit status 2 as argparse does.
"""

from __future__ import annotations

import argparse
import functools
import json
import operator
import os
import re
import sys
import tomllib
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import attrs

from agent.worker.netguard import AllowList

__all__ = [
    # value kinds
    "ALLOW_LIST", "CONCURRENCY", "COUNT", "DAYS", "DIR", "DIRS", "DURATION", "FILE", "HOST", "NUMBER", "PORT",
    "POSITIVE_DURATION", "PROGRAM", "SECONDS", "SWITCH", "TEXT", "TIMEOUT", "URL", "Kind", "choice",
    # --help groups
    "CONNECTION", "ENGINES", "GROUPS", "JOBS", "LISTENING", "OBSERVABILITY", "SCHEDULING", "SHUTDOWN", "TLS",
    # declaring, parsing, building
    "CONFIG_FILE", "ConfigError", "Setting", "SettingsParser", "add_settings", "build", "format_duration", "nested",
    "parse_bool", "parse_concurrency", "parse_days", "parse_duration", "parse_positive", "parse_url", "setting",
    "settings_of",
]

# --help groups, in the order they are shown; a setting names its group.
CONNECTION = "connection and auth"
LISTENING = "listening and storage"
TLS = "TLS"
SCHEDULING = "concurrency and scheduling"
JOBS = "jobs and media"
ENGINES = "engines and hardware"
SHUTDOWN = "shutdown"
OBSERVABILITY = "observability"
GROUPS = (LISTENING, CONNECTION, TLS, SCHEDULING, JOBS, ENGINES, SHUTDOWN, OBSERVABILITY)


class ConfigError(ValueError):
    """A flag, environment variable or file has a value we cannot use; the message says which.

    ``reason`` is the message without the value, for callers that show where
    the value came from themselves (``FFRTMP_POLL_INTERVAL=5x: is not a duration``).
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


def _invalid(text: str, reason: str) -> ConfigError:
    return ConfigError(f"{text!r} {reason}", reason)


def _reason(error: ValueError) -> str:
    return error.reason if isinstance(error, ConfigError) else str(error)


# ---- Values: how each type of setting is read from text and shown -------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (``5s``, ``1m30s``, ``250ms``) or a bare number of seconds.

    Go syntax keeps the original agent's scripts working; a bare number is what
    people type.

    Raises:
        ConfigError: the text is neither, or is negative.
    """
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise _invalid(text, "is not a duration; write it as 30s, 1m30s, 250ms or a number of seconds") from None
    if seconds < 0:
        raise _invalid(text, "is negative; a duration must be zero or more")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest Go duration for ``seconds`` in one unit (``300`` -> ``5m``), as --help shows defaults."""
    if seconds == 0:
        return "0"
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 1e-3)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _amount(text: str, unit: str, example: str) -> float:
    """A number of ``unit``, fractions allowed; zero or more.

    Raises:
        ConfigError: the text is not a number, or is negative.
    """
    try:
        amount = float(text)
    except ValueError:
        raise _invalid(text, f"is not a number of {unit}; write for example {example}") from None
    if not amount >= 0:
        raise _invalid(text, f"must be zero or more {unit}")
    return amount


def parse_gigabytes(text: str) -> float:
    """A size in gigabytes (GiB), fractions allowed (``0.5``); zero or more."""
    return _amount(text, "gigabytes", "100 or 0.5")


def parse_days(text: str) -> float:
    """A number of days, fractions allowed (``0.5`` is twelve hours); zero or more."""
    return _amount(text, "days", "7 or 0.5")


def parse_bool(text: str) -> bool:
    """``true``/``false`` and the usual spellings (``1``, ``yes``, ``on``...), as the Go agent's flags took them."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise _invalid(text, "is not a boolean; write true or false")


# A switch's value written as a separate word; numbers are left alone (a job's sequence number may follow).
_BOOL_WORDS = ("true", "false", "yes", "no", "on", "off")


def _parse_int(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _invalid(text, f"is not a whole number such as {max(least, 4)}") from None
    if value < least:
        raise _invalid(text, f"must be at least {least}")
    return value


def parse_positive(text: str) -> int:
    """A whole number, 1 or more."""
    return _parse_int(text, 1)


def parse_concurrency(text: str) -> int:
    """A positive number, or ``auto``: a quarter of the cores, at least one."""
    if text.strip().lower() == "auto":
        return max(1, (os.cpu_count() or 1) // 4)
    return parse_positive(text)


def _parse_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise _invalid(text, "is not a port number such as 8080") from None
    if not 0 <= port <= 65535:
        raise _invalid(text, "is out of range 0-65535 (0 picks a free port)")
    return port


def _parse_seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _invalid(text, "is not a number of seconds such as 5") from None


def _parse_positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise _invalid(text, "must be a duration longer than 0, such as 20s")
    return seconds


def parse_url(text: str) -> str:
    """An ``http://`` or ``https://`` URL with a host, such as ``http://master:8080``.

    Without this check ``localhost:8080`` reads as the scheme ``localhost`` and
    the agent would retry it for ever; a typo in the address is configuration,
    found at start.

    Raises:
        ConfigError: no ``http``/``https`` scheme, or no host.
    """
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme.lower() not in ("http", "https") or "//" not in text:
        hint = re.sub(r"^[a-z][a-z0-9+.-]*:/*(?=\D)", "", text.strip(), flags=re.IGNORECASE) or "master:8080"
        raise _invalid(text, f"is not an http:// or https:// URL; write for example http://{hint}")
    if not parts.hostname:
        raise _invalid(text, "names no host; write for example http://master:8080")
    try:
        port = parts.port  # reading it checks it
    except ValueError:
        port = -1
    if port == -1:
        raise _invalid(text, "has a port that is not a number from 0 to 65535")
    return text.strip()


def _or_none(value: Any) -> str:
    return str(value) if value not in ("", None) else "none"


@attrs.frozen
class Kind:
    """How values of one type are read from text and shown in ``--help``."""

    # One value as written after the flag, in the variable or in the file.
    parse: Callable[[str], Any]
    metavar: str
    show: Callable[[Any], str] = _or_none
    # The value of the flag given alone, which makes the value optional (``--allow-private-inputs``).
    bare: Any = None
    # How a repeated flag's values add up (``--input-dir a --input-dir b``); None: one value only.
    combine: Callable[[Any, Any], Any] | None = None
    # Separates several values in one environment variable (``FFRTMP_INPUT_DIR=a:b``).
    separator: str = ""
    # Offers ``--no-<flag>``: the switches.
    negatable: bool = False


TEXT = Kind(str, "TEXT")
HOST = Kind(str, "HOST")
PROGRAM = Kind(str, "PROGRAM")
URL = Kind(parse_url, "URL")
FILE = Kind(Path, "FILE")
DIR = Kind(Path, "DIR")
DIRS = Kind(lambda text: [Path(text)], "DIR", show=lambda dirs: os.pathsep.join(map(str, dirs)) or "none",
            combine=operator.add, separator=os.pathsep)
DURATION = Kind(parse_duration, "DURATION", show=format_duration)
POSITIVE_DURATION = Kind(_parse_positive_duration, "DURATION", show=format_duration)
# A time limit: 0 is no limit, held as None.
TIMEOUT = Kind(lambda text: parse_duration(text) or None, "DURATION",
               show=lambda seconds: format_duration(seconds or 0.0))
DAYS = Kind(parse_days, "DAYS", show="{:g}".format)
GIGABYTES = Kind(parse_gigabytes, "GB", show="{:g}".format)
# A plain number of seconds, whose range the role checks where it knows what it is for (local's --duration).
SECONDS = Kind(_parse_seconds, "SECONDS", show="{:g}".format)
COUNT = Kind(parse_positive, "N", show=str)
NUMBER = Kind(lambda text: _parse_int(text, 0), "N", show=str)
CONCURRENCY = Kind(parse_concurrency, "N|auto", show=str)
PORT = Kind(_parse_port, "PORT", show=str)
SWITCH = Kind(parse_bool, "BOOL", show=lambda on: "on" if on else "off", bare=True, negatable=True)
ALLOW_LIST = Kind(lambda text: AllowList.parse([text]), "HOSTS", show=lambda allowed: "all" if allowed else "none",
                  bare=AllowList(everything=True), combine=AllowList.merged)


def choice(*names: str) -> Kind:
    """One of ``names``, as written."""

    def parse(text: str) -> str:
        if text not in names:
            raise _invalid(text, "is not one of " + ", ".join(names))
        return text

    return Kind(parse, "{" + ",".join(names) + "}")


# ---- Declarations ---------------------------------------------------------------------------------

@attrs.frozen
class Setting:
    """One setting: its value's kind, help and group; its flag, variables and default follow from its name."""

    kind: Kind
    group: str
    help: str
    # The config attribute it fills; the flag, the variable and the file key follow from it.
    name: str = ""
    # A value, or an attrs.Factory called afresh each time: no two configs share a list.
    default: Any = None
    # Only where the flag keeps another name than the attribute (``--master`` fills ``master_url``).
    flag: str = ""
    # Only where the variables are not ``FFRTMP_<FLAG>``; the first one set wins.
    env: tuple[str, ...] = ()
    # The default as --help shows it, where the value alone would not say what happens.
    shown: str = ""

    def default_value(self) -> Any:
        if isinstance(self.default, attrs.Factory):  # type: ignore[arg-type]  # a class at run time
            return self.default.factory()
        return self.default

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        """The attribute of the parsed namespace: the flag's name, as argparse would choose."""
        return self.option[2:].replace("-", "_")

    @property
    def key(self) -> str:
        """Its key in a ``--config`` file: the flag without ``--``."""
        return self.option[2:]

    @property
    def variables(self) -> tuple[str, ...]:
        return self.env or ("FFRTMP_" + self.dest.upper(),)

    @property
    def invocation(self) -> str:
        """How --help writes the flag: ``--adaptive / --no-adaptive``, ``--poll-interval DURATION``."""
        if self.kind.negatable:
            return f"{self.option} / --no-{self.key}"
        if self.kind.bare is not None:
            return f"{self.option} [{self.kind.metavar}]"
        return f"{self.option} {self.kind.metavar}"

    def describe(self) -> str:
        """Its --help text: what it does, its default, and its variables where they are not the usual one."""
        shown = self.shown or self.kind.show(self.default_value())
        variables = "" if self.env == () else "; env " + ", ".join(self.variables)
        return f"{self.help} (default: {shown}{variables})".replace("%", "%%")

    def read(self, texts: Sequence[str]) -> Any:
        """The value of ``texts`` from a variable or a file: the one value, or the repeated ones added up.

        Raises:
            ValueError: a text does not parse, or there are several for a setting that takes one.
        """
        if not texts:
            return self.default_value()
        if self.kind.combine is None:
            if len(texts) > 1:
                raise ConfigError(f"{self.key} takes one value, not a list", "takes one value, not a list")
            return self.kind.parse(texts[0])
        return functools.reduce(self.kind.combine, map(self.kind.parse, texts))


_SETTING = "agent.settings.setting"
_NESTED = "agent.settings.nested"


def setting(default: Any, kind: Kind, group: str, help: str, *, flag: str = "", env: tuple[str, ...] = (),
            shown: str = "", converter: Callable[[Any], Any] | None = None, repr: bool = True) -> Any:
    """An attrs field that is also a setting; ``default`` may be an ``attrs.Factory``.

    Example::

        poll_interval: float = setting(5.0, DURATION, SCHEDULING, "wait between polls while the queue is empty")
    """
    declared = Setting(kind, group, help, flag=flag, env=env, shown=shown)
    return attrs.field(default=default, converter=converter, repr=repr, metadata={_SETTING: declared})


def nested(cls: type[Any]) -> Any:
    """An attrs field holding another settings class (``AgentConfig.tls``), built from the same flags."""
    return attrs.field(factory=cls, metadata={_NESTED: cls})


def _declared(field: attrs.Attribute[Any]) -> Setting:
    declared: Setting = field.metadata[_SETTING]
    return attrs.evolve(declared, name=field.name, default=field.default)


def settings_of(cls: type[Any]) -> tuple[Setting, ...]:
    """The settings declared on the fields of ``cls`` and of its nested settings classes, in field order."""
    found: list[Setting] = []
    for field in attrs.fields(cls):
        if _NESTED in field.metadata:
            found += settings_of(field.metadata[_NESTED])
        elif _SETTING in field.metadata:
            found.append(_declared(field))
    return tuple(found)


T = TypeVar("T")


def build(cls: type[T], values: argparse.Namespace, **computed: Any) -> T:
    """``cls`` with every setting field taken from ``values``, as :class:`SettingsParser` left them.

    Args:
        computed: fields the caller worked out itself (the key read from
            ``--api-key-file``, the server TLS from several flags); they win.
    """
    fields: dict[str, Any] = {}
    for field in attrs.fields(cls):  # type: ignore[arg-type]
        if _NESTED in field.metadata:
            fields[field.name] = build(field.metadata[_NESTED], values)
        elif _SETTING in field.metadata:
            fields[field.name] = getattr(values, _declared(field).dest)
    return cls(**(fields | computed))


# ---- The command line ------------------------------------------------------------------------------

CONFIG_FILE = Setting(FILE, "", "read settings from this TOML file, keyed by flag name (poll-interval = \"5s\"); "
                      "flags and environment variables win over it", name="config")


class _SettingAction(argparse.Action):
    """A setting's flag: parses its value with the setting's kind, adds up repeats, and knows ``--no-``."""

    # add_argument passes the parser's default too; ours are applied after parsing, by SettingsParser.
    def __init__(self, option_strings: list[str], dest: str, setting: Setting, default: Any = None) -> None:
        super().__init__(
            # A switch's value, if any, is joined to it by SettingsParser before argparse sees it.
            option_strings, dest, nargs=0 if setting.kind.negatable else "?" if setting.kind.bare is not None else None,
            default=argparse.SUPPRESS, metavar=setting.kind.metavar, help=setting.describe(),
        )
        self.setting = setting

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        kind = self.setting.kind
        if kind.negatable:
            value: Any = not (option_string or "").startswith("--no-")
        elif values is None:
            value = kind.bare
        else:
            try:
                value = kind.parse(values)
            except ValueError as exc:
                raise argparse.ArgumentError(self, str(exc)) from None
        if kind.combine is not None and hasattr(namespace, self.dest):
            value = kind.combine(getattr(namespace, self.dest), value)
        setattr(namespace, self.dest, value)


class _HelpFormatter(argparse.HelpFormatter):
    """Writes a setting's flag as the setting says (``--adaptive / --no-adaptive``), not ``--adaptive [ADAPTIVE]``."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, _SettingAction):
            return action.setting.invocation
        return super()._format_action_invocation(action)


def add_settings(parser: argparse.ArgumentParser, settings: Sequence[Setting]) -> None:
    """Add a flag for each setting, in argument groups ordered as :data:`GROUPS`; group "" is the parser's own."""
    groups: dict[str, Any] = {"": parser}
    for title in GROUPS:
        if any(s.group == title for s in settings):
            groups[title] = parser.add_argument_group(title)
    for each in settings:
        options = [each.option, f"--no-{each.key}"] if each.kind.negatable else [each.option]
        groups[each.group].add_argument(*options, dest=each.dest, action=_SettingAction, setting=each)


class SettingsParser(argparse.ArgumentParser):
    """An ArgumentParser whose setting flags fall back on the environment, a ``--config`` file, then the default.

    After parsing, every setting has a value in the namespace, so callers read
    ``args.poll_interval`` whatever set it. Plain ``add_argument`` flags work
    as usual beside the settings.
    """

    def __init__(self, *args: Any, settings: Sequence[Setting] = (), **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        add_settings(self, settings)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        given = list(sys.argv[1:] if args is None else args)
        parsed, extras = super().parse_known_args(self._switches_joined(given), namespace or argparse.Namespace())
        self._fill(parsed)
        return parsed, extras

    def _switches_joined(self, args: list[str]) -> list[str]:
        """A switch's value joined to it: ``--adaptive=false`` and ``--adaptive false`` become ``--no-adaptive``.

        A switch takes a separate value only when it is a word (``true``, ``no``),
        never a number or anything else, so ``--insecure-skip-verify jobs list``
        and ``jobs status --insecure-skip-verify 12`` keep their subcommand and job.
        """
        switches = {a.setting.option: a.setting for a in self._actions
                    if isinstance(a, _SettingAction) and a.setting.kind.negatable}
        joined: list[str] = []
        at = 0
        while at < len(args):
            arg = args[at]
            at += 1
            if arg == "--":
                return joined + args[at - 1:]
            flag, equals, text = arg.partition("=")
            if equals and flag.startswith("--no-") and "--" + flag[5:] in switches:
                self.error(f"{flag} takes no value")
            if flag not in switches:
                joined.append(arg)
                continue
            if not equals and at < len(args) and args[at].strip().lower() in _BOOL_WORDS:
                text = args[at]
                at += 1
            try:
                on = parse_bool(text or "true")
            except ConfigError as exc:
                self.error(f"argument {flag}: {exc}")
            joined.append(flag if on else f"--no-{switches[flag].key}")
        return joined

    def add_subparsers(self, **kwargs: Any) -> Any:
        """Subcommands whose settings this parser fills, once the whole command line is read."""
        kwargs.setdefault("parser_class", _SubcommandParser)
        return super().add_subparsers(**kwargs)

    def fail(self, message: str) -> NoReturn:
        """Exit 2 with one line: unlike :meth:`error`, no usage, which would not help with a variable or a file."""
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _settings(self) -> list[Setting]:
        """Its own settings and its subcommands', each once."""
        found: dict[str, Setting] = {}
        for action in self._actions:
            if isinstance(action, _SettingAction):
                found.setdefault(action.dest, action.setting)
            elif isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found |= {each.dest: each for each in sub._settings() if each.dest not in found}
        return list(found.values())

    def _fill(self, namespace: argparse.Namespace) -> None:
        settings = self._settings()
        unset = [s for s in settings if not hasattr(namespace, s.dest)]
        found = dict(self._from_environment(unset))
        config = getattr(namespace, CONFIG_FILE.dest, found.get(CONFIG_FILE.dest))
        if config is not None:
            from_file = self._from_file(config, [s for s in settings if s.dest != CONFIG_FILE.dest])
            found = from_file | found
        for each in unset:
            setattr(namespace, each.dest, found[each.dest] if each.dest in found else each.default_value())

    def _from_environment(self, settings: Sequence[Setting]) -> Iterator[tuple[str, Any]]:
        for each in settings:
            # An empty variable counts as unset, as compose files and unit files often leave them.
            variable, text = next(((v, os.environ[v]) for v in each.variables if os.environ.get(v)), ("", ""))
            if not variable:
                continue
            texts = [t for t in text.split(each.kind.separator) if t] if each.kind.separator else [text]
            try:
                yield each.dest, each.read(texts)
            except ValueError as exc:
                self.fail(f"{variable}={text}: {_reason(exc)}")

    def _from_file(self, path: Path, settings: Sequence[Setting]) -> dict[str, Any]:
        try:
            with path.open("rb") as file:
                table = tomllib.load(file)
        except OSError as exc:
            self.fail(f"cannot read --config {path}: {exc.strerror}")
        except tomllib.TOMLDecodeError as exc:
            self.fail(f"--config {path} is not TOML: {exc}")
        by_key = {s.key: s for s in settings}
        values: dict[str, Any] = {}
        for key, raw in table.items():
            if key not in by_key:
                self.fail(f"{path}: {key!r} is not a setting; the keys are the flag names without --, "
                          "such as poll-interval")
            try:
                values[by_key[key].dest] = by_key[key].read(_texts(raw))
            except ValueError as exc:
                self.fail(f"{path}: {key} = {json.dumps(raw, default=str)}: {_reason(exc)}")
        return values


class _SubcommandParser(SettingsParser):
    """A subcommand's parser, which leaves its settings unset for the top parser to fill.

    argparse copies everything a subcommand's parser sets over what the top
    parser read, so defaults filled here would undo ``ffrtmp --master URL jobs
    list``; the top parser fills them after the whole line.
    """

    def _fill(self, namespace: argparse.Namespace) -> None:
        pass


def _texts(raw: Any) -> list[str]:
    """A TOML value as the texts a flag would have been given: ``true`` as ``"true"``, a list item by item."""
    if isinstance(raw, list):
        return [text for item in raw for text in _texts(item)]
    if isinstance(raw, bool):
        return ["true" if raw else "false"]
    if isinstance(raw, (str, int, float)):
        return [str(raw)]
    raise ConfigError(f"{raw!r} is not a string, number, boolean or list", "must be a string, number, boolean or list")
