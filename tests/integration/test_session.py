"""BalenaSession over real HTTP on 127.0.0.1: auth headers, retries, error mapping, secrecy."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from flasher import __version__
from flasher.balena.balenarc import saved_login_api_url
from flasher.balena.session import BalenaSession, is_not_found
from flasher.errors import ApiError, AuthError, CatalogError, ConfigError
from flasher.models import Secret
from tests.support.fakeapi import Answer, FakeApi, Recorded, closed_port_url

TOKEN = "tok_5eCr3t-0123456789abcdef"


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi() as server:
        yield server


@pytest.fixture
def no_saved_login(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in (
        "BALENA_API_KEY",
        "BALENA_TOKEN",
        "FLASHER_API_URL",
        "BALENARC_API_URL",
        "BALENARC_BALENA_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BALENARC_DATA_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


class Sleeps(list[float]):
    """Records the waits a session asks for instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def session_for(api: FakeApi, token: str | None = TOKEN, **options: object) -> BalenaSession:
    defaults: dict[str, object] = {"max_retries": 3, "backoff_s": 0.01, "sleep": Sleeps()}
    defaults.update(options)
    return BalenaSession(api.url, Secret(token) if token else None, **defaults)  # type: ignore[arg-type]


def test_sends_bearer_token_and_user_agent(api: FakeApi) -> None:
    api.reply("GET", "/ping", Answer(200, {"ok": True}))
    with session_for(api) as session:
        assert session.get_json("/ping") == {"ok": True}
    (req,) = api.requests
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.headers["user-agent"] == f"flasher/{__version__}"


def test_sends_no_authorization_without_token(api: FakeApi) -> None:
    api.reply("GET", "/ping", Answer(200, {}))
    with session_for(api, token=None) as session:
        session.get_json("/ping")
    assert "authorization" not in api.requests[0].headers


def test_token_is_not_sent_to_another_origin(api: FakeApi) -> None:
    with FakeApi() as other:
        other.reply("GET", "/file", Answer(200, b"data"))
        with session_for(api) as session:
            session.request("GET", f"{other.url}/file")
        assert "authorization" not in other.requests[0].headers


def test_repr_hides_token(api: FakeApi) -> None:
    with session_for(api) as session:
        assert TOKEN not in repr(session)
        assert "authenticated=True" in repr(session)


@pytest.mark.parametrize(
    ("env", "file_token", "arg", "expected"),
    [
        ({"BALENA_API_KEY": "from-key"}, "from-file", None, "from-key"),
        ({"BALENA_TOKEN": "from-token"}, "from-file", None, "from-token"),
        ({"BALENA_API_KEY": "from-key", "BALENA_TOKEN": "from-token"}, None, None, "from-key"),
        ({}, "from-file\n", None, "from-file"),
        ({"BALENA_API_KEY": "from-key"}, "from-file", "from-arg", "from-arg"),
        ({}, None, None, None),
    ],
)
def test_from_environment_token_precedence(
    api: FakeApi,
    no_saved_login: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    file_token: str | None,
    arg: str | None,
    expected: str | None,
) -> None:
    # The saved login belongs to the balena CLI's API, here the fake one.
    monkeypatch.setenv("BALENARC_API_URL", api.url)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if file_token is not None:
        (no_saved_login / "token").write_text(file_token)
    api.reply("GET", "/ping", Answer(200, {}))
    with BalenaSession.from_environment(api_url=api.url, token=arg) as session:
        session.get_json("/ping")
    sent = api.requests[0].headers.get("authorization")
    assert sent == (f"Bearer {expected}" if expected else None)


def test_from_environment_reads_api_url(
    api: FakeApi, no_saved_login: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASHER_API_URL", api.url + "/")
    with BalenaSession.from_environment() as session:
        assert session.api_url == api.url


def test_from_environment_defaults_to_balena_cloud(no_saved_login: Path) -> None:
    with BalenaSession.from_environment() as session:
        assert session.api_url == "https://api.balena-cloud.com"
        assert not session.authenticated


def test_retries_429_after_the_retry_after_seconds(api: FakeApi) -> None:
    api.reply(
        "GET", "/busy", Answer(429, "slow down", {"Retry-After": "7"}), Answer(200, {"ok": 1})
    )
    sleeps = Sleeps()
    with session_for(api, sleep=sleeps) as session:
        assert session.get_json("/busy") == {"ok": 1}
    assert sleeps == [7.0]
    assert len(api.hits("/busy")) == 2


def test_retry_after_may_be_an_http_date(api: FakeApi) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    api.reply("GET", "/busy", Answer(503, "", {"Retry-After": when}), Answer(200, {}))
    sleeps = Sleeps()
    with session_for(api, sleep=sleeps) as session:
        session.get_json("/busy")
    assert len(sleeps) == 1
    assert 20 < sleeps[0] <= 31


def test_gives_up_on_5xx_after_bounded_retries(api: FakeApi) -> None:
    api.reply("GET", "/broken", Answer(500, {"message": "internal"}))
    sleeps = Sleeps()
    with session_for(api, max_retries=3, sleep=sleeps) as session, pytest.raises(ApiError) as info:
        session.get_json("/broken")
    assert len(api.hits("/broken")) == 4
    assert len(sleeps) == 3
    assert info.value.fields["status"] == 500
    assert "internal" in str(info.value)


def test_backoff_grows_between_retries(api: FakeApi) -> None:
    api.reply("GET", "/broken", Answer(502, ""))
    sleeps = Sleeps()
    session = session_for(api, max_retries=4, backoff_s=1.0, max_backoff_s=100.0, sleep=sleeps)
    with session, pytest.raises(ApiError):
        session.get_json("/broken")
    # Equal jitter keeps each wait within [step/2, step] for steps 1, 2, 4, 8 s.
    for wait, step in zip(sleeps, [1.0, 2.0, 4.0, 8.0], strict=True):
        assert step / 2 <= wait <= step


def test_total_wait_is_bounded(api: FakeApi) -> None:
    api.reply("GET", "/busy", Answer(429, "", {"Retry-After": "3600"}))
    sleeps = Sleeps()
    session = session_for(api, max_wait_total_s=60.0, sleep=sleeps)
    with session, pytest.raises(ApiError) as info:
        session.get_json("/busy")
    assert sleeps == []
    assert info.value.fields["retry_after_s"] == 3600.0
    assert len(api.hits("/busy")) == 1


def test_post_is_not_repeated_after_a_500(api: FakeApi) -> None:
    api.reply("POST", "/mint", Answer(500, ""), Answer(200, {}))
    with session_for(api) as session, pytest.raises(ApiError):
        session.post_json("/mint", {"a": 1})
    assert len(api.hits("/mint")) == 1


def test_post_is_repeated_after_a_503(api: FakeApi) -> None:
    api.reply("POST", "/mint", Answer(503, ""), Answer(200, {"minted": True}))
    with session_for(api) as session:
        assert session.post_json("/mint", {"a": 1}) == {"minted": True}
    assert [r.json() for r in api.hits("/mint")] == [{"a": 1}, {"a": 1}]


def test_connection_refused_becomes_api_error_with_hint() -> None:
    sleeps = Sleeps()
    session = BalenaSession(closed_port_url(), None, max_retries=2, backoff_s=0.01, sleep=sleeps)
    with session, pytest.raises(ApiError) as info:
        session.get_json("/ping")
    assert "Cannot reach the balena API" in str(info.value)
    assert info.value.hint is not None and "--sandbox" in info.value.hint
    assert info.value.fields["attempts"] == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("token", [TOKEN, None])
def test_auth_failure_becomes_auth_error_with_login_hint(
    api: FakeApi, status: int, token: str | None
) -> None:
    api.reply("GET", "/private", Answer(status, "Unauthorized"))
    with session_for(api, token=token) as session, pytest.raises(AuthError) as info:
        session.get_json("/private")
    assert info.value.fields["status"] == status
    assert info.value.hint is not None
    assert "balena login" in info.value.hint and "BALENA_API_KEY" in info.value.hint
    assert "--token" in info.value.hint
    assert len(api.hits("/private")) == 1


def test_not_found_is_a_catalog_error(api: FakeApi) -> None:
    with session_for(api) as session, pytest.raises(CatalogError) as info:
        session.get_json("/missing")
    assert is_not_found(info.value)
    assert not isinstance(info.value, ApiError)


def test_other_client_errors_carry_the_server_message(api: FakeApi) -> None:
    api.reply("GET", "/bad", Answer(400, {"message": "Invalid device type"}))
    with session_for(api) as session, pytest.raises(ApiError) as info:
        session.get_json("/bad")
    assert "Invalid device type" in str(info.value)
    assert info.value.fields["status"] == 400
    assert len(api.hits("/bad")) == 1


def test_non_json_answer_is_an_api_error(api: FakeApi) -> None:
    api.reply("GET", "/html", Answer(200, "<html>portal</html>"))
    with session_for(api) as session, pytest.raises(ApiError, match="not JSON"):
        session.get_json("/html")


def _echo_auth(request: Recorded) -> Answer:
    auth = request.headers.get("authorization", "")
    return Answer(400, {"message": f"bad credentials {auth} for you ({auth[7:]})"})


@pytest.mark.parametrize("status", [400, 401, 500])
def test_token_never_reaches_errors_or_logs(
    api: FakeApi, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    def echo(request: Recorded) -> Answer:
        return Answer(status, _echo_auth(request).body)

    api.reply("GET", "/echo", echo)
    caplog.set_level(logging.DEBUG)
    with session_for(api, max_retries=1) as session, pytest.raises(CatalogError) as info:
        session.get_json("/echo")
    err = info.value
    assert "bad credentials" in str(err)
    for text in (str(err), repr(err), str(err.to_dict()), err.hint or "", caplog.text):
        assert TOKEN not in text
    assert "Bearer" in api.requests[0].headers["authorization"]


def test_pine_get_builds_odata_query(api: FakeApi) -> None:
    api.reply("GET", "/v7/device_type", Answer(200, {"d": [{"slug": "raspberry-pi"}]}))
    options = {
        "$top": 1,
        "$select": "slug",
        "$orderby": {"name": "asc"},
        "$filter": {
            "device_type_alias": {
                "$any": {
                    "$alias": "dta",
                    "$expr": {"dta": {"is_referenced_by__alias": "raspberrypi"}},
                }
            }
        },
    }
    with session_for(api) as session:
        rows = session.pine_get("device_type", options)
    assert rows == [{"slug": "raspberry-pi"}]
    assert unquote(api.requests[0].raw_query) == (
        "$select=slug&$filter=device_type_alias/any(dta:dta/is_referenced_by__alias eq "
        "'raspberrypi')&$orderby=name asc&$top=1"
    )


def test_pine_get_by_id_uses_entity_path(api: FakeApi) -> None:
    api.reply("GET", "/v7/application(1958513)", Answer(200, {"d": [{"id": 1958513}]}))
    with session_for(api) as session:
        assert session.pine_get("application", {"$select": "id"}, entity_id=1958513) == [
            {"id": 1958513}
        ]
    assert api.requests[0].query == {"$select": "id"}


def test_pine_get_rejects_answers_without_rows(api: FakeApi) -> None:
    api.reply("GET", "/v7/device_type", Answer(200, {"error": "nope"}))
    with session_for(api) as session, pytest.raises(ApiError, match="unexpected shape"):
        session.pine_get("device_type")


# --- where the saved login goes -----------------------------------------------------------------

SAVED = "saved-login-token"


def _save_login(folder: Path) -> None:
    (folder / "token").write_text(SAVED)


@pytest.mark.parametrize("source", ["file", "BALENA_API_KEY", "BALENA_TOKEN"])
def test_the_saved_login_is_not_sent_to_another_api(
    api: FakeApi, no_saved_login: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    if source == "file":
        _save_login(no_saved_login)
    else:
        monkeypatch.setenv(source, SAVED)
    api.reply("GET", "/ping", Answer(200, {}))
    with BalenaSession.from_environment(api_url=api.url) as session:
        session.get_json("/ping")
        assert not session.authenticated
    assert "authorization" not in api.requests[0].headers


def test_the_saved_login_goes_to_the_api_of_the_balenarc_file(
    api: FakeApi, no_saved_login: Path
) -> None:
    _save_login(no_saved_login)
    (no_saved_login / ".balenarc.yml").write_text(f"apiUrl: '{api.url}/'\n")
    api.reply("GET", "/ping", Answer(200, {}))
    with BalenaSession.from_environment() as session:
        session.get_json("/ping")
    assert api.requests[0].headers["authorization"] == f"Bearer {SAVED}"


@pytest.mark.parametrize(
    ("settings", "env", "expected"),
    [
        ("", {}, "https://api.balena-cloud.com"),
        ("balenaUrl: 'open.example.org'\n", {}, "https://api.open.example.org"),
        ('balenaUrl: "open.example.org"  # mine\n', {}, "https://api.open.example.org"),
        (
            "balenaUrl: open.example.org\n",
            {"BALENARC_BALENA_URL": "env.example"},
            "https://api.env.example",
        ),
        ("", {"BALENARC_API_URL": "https://api.x.example/"}, "https://api.x.example"),
    ],
)
def test_the_login_host_follows_the_balena_cli_settings(
    no_saved_login: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: str,
    env: dict[str, str],
    expected: str,
) -> None:
    (no_saved_login / ".balenarc.yml").write_text(settings)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert saved_login_api_url() == expected


def test_the_saved_login_goes_to_its_own_host_by_default(
    no_saved_login: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BALENARC_BALENA_URL", "open.example.org")
    _save_login(no_saved_login)
    with BalenaSession.from_environment() as session:
        assert session.api_url == "https://api.open.example.org"
        assert session.authenticated
    with BalenaSession.from_environment(api_url="https://api.balena-cloud.com") as session:
        assert not session.authenticated


def test_an_explicit_token_goes_to_another_api(api: FakeApi, no_saved_login: Path) -> None:
    _save_login(no_saved_login)
    api.reply("GET", "/ping", Answer(200, {}))
    with BalenaSession.from_environment(api_url=api.url, token=TOKEN) as session:
        session.get_json("/ping")
    assert api.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    "url", ["http://api.example.org", "http://10.0.0.2:8080", "http://localhost.example:80"]
)
def test_a_token_over_plain_http_to_another_host_is_refused(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        BalenaSession(url, Secret(TOKEN))
    assert caught.value.field == "api_url"
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://[::1]:8080", "https://api.x.org"])
def test_a_token_may_go_to_loopback_http_or_https(url: str) -> None:
    with BalenaSession(url, Secret(TOKEN)) as session:
        assert session.authenticated


def test_the_saved_login_never_goes_over_plain_http(
    no_saved_login: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BALENARC_API_URL", "http://api.example.org")
    _save_login(no_saved_login)
    with BalenaSession.from_environment() as session:
        assert not session.authenticated
