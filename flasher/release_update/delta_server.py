"""The balena delta server: where it is, and asking it to build the delta between two images.

`GET <delta URL>/api/v3/delta?src=<image id>&dest=<image id>` with the API login's bearer
token, redirects followed, a 59 s client timeout. Any answer below 400 means the delta exists
or is being built; 504 means the server is still computing it (its gateway gave up waiting);
any other error fails with the server's words (`Request error: <body>`), and no answer in time
fails with `network timeout`. The body of a success is not needed.

The URL follows the balena CLI settings balena-release-update reads (balena-settings-client):
`deltaUrl`, else `https://delta.<balenaUrl>`, each taken from $BALENARC_DELTA_URL /
$BALENARC_BALENA_URL over ./.balenarc.yml over ~/.balenarc.yml (top-level `key: value` lines);
with neither set, `delta.` beside an `api.` host of the API URL in use
(https://delta.balena-cloud.com for balenaCloud). An API on any other host (a local one) is
taken to serve the delta endpoint too, so the login's token never leaves for a host it does not
belong to. Callers may pass one explicitly.

Imports requests and flasher.errors; never Qt or the faces.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import requests

from flasher.errors import DeltaRequestFailed

DEFAULT_BALENA_URL = "balena-cloud.com"
TIMEOUT_S = 59.0


class DeltaAnswer(enum.Enum):
    ACCEPTED = "accepted"  # built, or building and answered in time
    COMPUTING = "computing"  # 504: still being built


_SETTING_LINE = re.compile(r"^(balenaUrl|deltaUrl)\s*:\s*(.*?)\s*$")
_ENVIRONMENT = {"balenaUrl": "BALENARC_BALENA_URL", "deltaUrl": "BALENARC_DELTA_URL"}


def _settings_file(path: Path) -> dict[str, str]:
    """The balenaUrl/deltaUrl of one .balenarc.yml (plain top-level scalars only)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    found = {}
    for line in text.splitlines():
        match = _SETTING_LINE.match(line)
        if match and match.group(2):
            found[match.group(1)] = match.group(2).strip("'\"")
    return found


def balena_settings(
    environ: Mapping[str, str], home: Path | None = None, cwd: Path | None = None
) -> dict[str, str]:
    """balenaUrl and deltaUrl as balena-settings-client merges them (environment wins)."""
    merged: dict[str, str] = {}
    for directory in (home or Path.home(), cwd or Path.cwd()):
        merged.update(_settings_file(directory / ".balenarc.yml"))
    for key, variable in _ENVIRONMENT.items():
        if environ.get(variable):
            merged[key] = environ[variable]
    return merged


def delta_url_from_settings(
    api_url: str,
    environ: Mapping[str, str] | None = None,
    *,
    home: Path | None = None,
    cwd: Path | None = None,
) -> str:
    """The delta server's base URL for an API at `api_url` (see the module docstring)."""
    settings = balena_settings(os.environ if environ is None else environ, home, cwd)
    if "deltaUrl" in settings:
        return settings["deltaUrl"].rstrip("/")
    if "balenaUrl" in settings:
        return f"https://delta.{settings['balenaUrl'].strip('/')}"
    parts = urlsplit(api_url)
    host = parts.hostname or ""
    if host.startswith("api."):
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://delta.{host[4:]}{port}"
    if host:
        return api_url.rstrip("/")
    return f"https://delta.{DEFAULT_BALENA_URL}"


class DeltaServer:
    """A client of one delta server. `authorization` is the API login's bearer header (the
    delta server shares it); it is sent to this server only, and never on a redirect to
    another host."""

    def __init__(
        self,
        url: str,
        authorization: Mapping[str, str],
        *,
        timeout_s: float = TIMEOUT_S,
        http: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._authorization = dict(authorization)
        self.timeout_s = timeout_s
        self._http = http or requests.Session()

    def __repr__(self) -> str:
        return f"DeltaServer(url={self.url!r})"

    def close(self) -> None:
        self._http.close()

    def request_delta(self, source_image_id: int, target_image_id: int) -> DeltaAnswer:
        """Ask for the delta between two images; DeltaRequestFailed if the server refuses."""
        endpoint = f"{self.url}/api/v3/delta"
        try:
            response = self._http.get(
                endpoint,
                params={"src": source_image_id, "dest": target_image_id},
                headers=self._authorization,
                timeout=self.timeout_s,
                allow_redirects=True,
            )
        except requests.Timeout:
            raise DeltaRequestFailed("network timeout", status=None, url=endpoint) from None
        except requests.RequestException as err:
            reason = "connection failed" if isinstance(err, requests.ConnectionError) else ""
            raise DeltaRequestFailed(
                f"request to {endpoint} failed, reason: {reason or type(err).__name__}",
                status=None,
                url=endpoint,
            ) from None
        with response:
            if response.status_code == 504:
                return DeltaAnswer.COMPUTING
            if response.status_code < 400:
                return DeltaAnswer.ACCEPTED
            body = response.text.strip()
        token = self._authorization.get("Authorization", "").partition(" ")[2]
        if token:
            body = body.replace(token, "***")
        raise DeltaRequestFailed(
            f"Request error: {body}", status=response.status_code, url=endpoint
        )
