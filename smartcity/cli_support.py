"""What every `smartcity` sub-command shares: settings loading and one-line errors.

Errors the user can fix (a wrong setting, a broker that does not answer) print one line
and exit 2, never a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from smartcity.kafka import BrokerUnreachable
from smartcity.registry import RegistryUnavailable
from smartcity.settings import Settings, SettingsError, load_settings

P = ParamSpec("P")
R = TypeVar("R")

err_console = Console(stderr=True)


class UserError(RuntimeError):
    """Something the user can fix; shown as one line without a traceback."""


def fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can fix into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (SettingsError, UserError, BrokerUnreachable, RegistryUnavailable) as error:
            raise fail(str(error)) from None

    return wrapper


def settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as error:
        raise fail(str(error)) from None
