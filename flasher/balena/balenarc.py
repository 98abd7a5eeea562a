"""The balena CLI's settings (`~/.balenarc.yml` and `BALENARC_*` variables): which API host its
saved login belongs to, and whether a URL may carry a token.

The balena CLI keeps its settings in `~/.balenarc.yml`, each overridable by a `BALENARC_<NAME>`
environment variable (`balenaUrl` → BALENARC_BALENA_URL). Its API is `apiUrl`, which defaults to
`https://api.<balenaUrl>` (balenaUrl defaults to balena-cloud.com). `balena login` saves a token
for that API, so the saved login (and the BALENA_API_KEY / BALENA_TOKEN the CLI reads next to
it) is sent there and nowhere else.

Only the top-level scalar keys this module needs are read, from the simple `key: value` lines
the CLI's settings file holds; anything else in the file is ignored. Pure standard library; never
imports requests, Qt or the faces.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_BALENA_URL = "balena-cloud.com"
SETTINGS_FILE_NAME = ".balenarc.yml"
_SETTINGS_MAX_BYTES = 64 * 1024
_SCALAR_LINE = re.compile(r"^(balenaUrl|apiUrl)\s*:\s*(.*?)\s*$")


def _env_name(key: str) -> str:
    """`balenaUrl` → BALENARC_BALENA_URL, as balena-settings-client spells them."""
    return "BALENARC_" + re.sub(r"(?<!^)(?=[A-Z])", "_", key).upper()


def _unquote(value: str) -> str:
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = value.find(quote, 1)
        return value[1:end] if end > 0 else value[1:]
    return value.split(" #", 1)[0].strip()


def read_settings_file(path: Path) -> dict[str, str]:
    """The `balenaUrl` / `apiUrl` lines of a balenarc file; {} when it is missing or unreadable."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_SETTINGS_MAX_BYTES)
    except OSError:
        return {}
    found: dict[str, str] = {}
    for line in raw.decode("utf-8", errors="replace").splitlines():
        match = _SCALAR_LINE.match(line)
        if match and _unquote(match.group(2)):
            found[match.group(1)] = _unquote(match.group(2))
    return found


def saved_login_api_url(environ: Mapping[str, str] | None = None, home: Path | None = None) -> str:
    """The API the balena CLI's login belongs to: BALENARC_API_URL or `apiUrl`, else
    `https://api.<balenaUrl>` from BALENARC_BALENA_URL or `balenaUrl`, else balenaCloud's."""
    env = os.environ if environ is None else environ
    settings = read_settings_file((home or Path.home()) / SETTINGS_FILE_NAME)
    api_url = env.get(_env_name("apiUrl")) or settings.get("apiUrl")
    if api_url:
        return api_url.rstrip("/")
    balena_url = env.get(_env_name("balenaUrl")) or settings.get("balenaUrl") or DEFAULT_BALENA_URL
    host = balena_url.split("://", 1)[-1].strip("/")
    return f"https://api.{host}"


def origin(url: str) -> tuple[str, str]:
    """(scheme, host:port) in lower case, with the scheme's default port made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    host = (parts.hostname or "").lower()
    return scheme, f"{host}:{port or {'https': 443, 'http': 80}.get(scheme, 0)}"


def is_loopback(url: str) -> bool:
    """Whether `url`'s host is 127.0.0.1 or ::1 (any loopback address, not a name)."""
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def may_carry_token(url: str) -> bool:
    """A token travels over https, or over plain http only to this machine's loopback."""
    scheme = urlsplit(url).scheme.lower()
    return scheme == "https" or (scheme == "http" and is_loopback(url))
