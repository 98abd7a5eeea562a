"""The environment of the programs Flasher starts for itself: the caller's, less its secrets.

Secrets may reach Flasher through its own environment (FLASHER_WIFI_KEY,
FLASHER_PROVISIONING_KEY, BALENA_API_KEY or BALENA_TOKEN, the supervisor's API key, a report
database URL that holds a password). They are meant for the host they belong to, so the tools
Flasher runs on the side (udisksctl or eject to power a card off, notify-send or gdbus for a
desktop notification) get everything else the caller set (PATH, DISPLAY, the session bus) but
none of those, nor any variable whose name says it holds a key, token, password, secret or
credentials. The writer helper gets an environment of its own (flasher.writer.launchers).

Imports only the standard library.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

# Every variable Flasher itself reads a secret from.
SECRET_VARIABLES = frozenset(
    {
        "FLASHER_WIFI_KEY",
        "FLASHER_PROVISIONING_KEY",
        "FLASHER_BENCH_REPORT_DB",  # a PostgreSQL URL may carry its password
        "BALENA_API_KEY",
        "BALENA_TOKEN",
        "BALENA_SUPERVISOR_API_KEY",
        "RESIN_SUPERVISOR_API_KEY",
    }
)
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL", re.IGNORECASE)


def is_secret_variable(name: str) -> bool:
    return name in SECRET_VARIABLES or _SECRET_NAME.search(name) is not None


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environ` (default: this process's environment) without its secret variables."""
    env = os.environ if environ is None else environ
    return {name: value for name, value in env.items() if not is_secret_variable(name)}
