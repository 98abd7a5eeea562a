"""The `flasher device` verbs with options of their own: host-config, tags, target-state, logs,
journal, wait (the post-flash check) and list (the devices the balena API knows).

Streams print as they come and stop on --count or Ctrl-C, closing the connection.
"""

from __future__ import annotations

import argparse
import itertools
import json
from datetime import UTC, datetime
from typing import Any

from flasher.cli.context import CliContext
from flasher.cli.device_verbs import Verb, action, force_option, show
from flasher.errors import EXIT_OK, ConfigError
from flasher.supervisor.client import SupervisorClient
from flasher.supervisor.models import PROXY_TYPES, ProxySettings
from flasher.supervisor.wait import wait_for_device

LOG_IDLE_S = 3.0
LOG_LINES = 100

# -- host-config ------------------------------------------------------------------------------


def _host_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hostname", metavar="H", help="set the hostname ('' resets it)")
    parser.add_argument("--proxy-type", choices=PROXY_TYPES, help="the proxy's protocol")
    parser.add_argument("--proxy-ip", metavar="HOST", help="the proxy's address")
    parser.add_argument("--proxy-port", metavar="PORT", type=int, help="the proxy's port")
    parser.add_argument("--proxy-login", metavar="USER", help="the proxy's user name")
    parser.add_argument(
        "--no-proxy", metavar="ADDR", action="append", default=[], help="bypass (repeatable)"
    )
    parser.add_argument("--clear-proxy", action="store_true", help="remove the proxy")
    force_option(parser)


def _host_config_check(args: argparse.Namespace) -> None:
    proxy_given = any(
        v for v in (args.proxy_type, args.proxy_ip, args.proxy_port, args.proxy_login)
    ) or bool(args.no_proxy)
    if proxy_given and args.clear_proxy:
        raise ConfigError("--clear-proxy", "cannot be combined with --proxy-* options")
    if proxy_given and not (args.proxy_type and args.proxy_ip):
        raise ConfigError("--proxy-type", "a proxy needs --proxy-type and --proxy-ip")
    if args.proxy_port is not None and not 1 <= args.proxy_port <= 65535:
        raise ConfigError("--proxy-port", "must be between 1 and 65535")
    if args.hostname and (len(args.hostname) > 63 or not args.hostname.replace("-", "").isalnum()):
        raise ConfigError("--hostname", "letters, digits and '-', at most 63 characters")


def _host_config(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    proxy = None
    if args.proxy_type:
        proxy = ProxySettings(
            type=args.proxy_type,
            ip=args.proxy_ip,
            port=args.proxy_port,
            login=args.proxy_login,
            no_proxy=tuple(args.no_proxy),
        )
    if args.hostname is not None or proxy is not None or args.clear_proxy:
        result = client.set_host_config(
            hostname=args.hostname, proxy=proxy, clear_proxy=args.clear_proxy, force=args.force
        )
        if not ctx.out.json_mode:  # JSON shows the configuration that results
            action(ctx, "Host configuration changed", result)
    config = client.host_config()
    proxy_text = "none"
    if config.proxy is not None:
        p = config.proxy
        proxy_text = f"{p.type} {p.ip}:{p.port}" + (f" as {p.login}" if p.login else "")
    return show(ctx, config.to_dict(), f"hostname: {config.hostname}\nproxy:    {proxy_text}")


# -- tags, target state -----------------------------------------------------------------------


def _tags_check(args: argparse.Namespace) -> None:
    for item in args.set:
        key, eq, _value = item.partition("=")
        if not eq or not key or any(c.isspace() for c in key):
            raise ConfigError("--set", f"{item!r}: expected KEY=VALUE with no spaces in KEY")


def _tags(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    if args.set:
        client.set_tags(dict(item.split("=", 1) for item in args.set))
    tags = client.tags()
    data = [{"name": t.name, "value": t.value, "id": t.id} for t in tags]
    return show(ctx, data, "\n".join(f"{t.name}={t.value}" for t in tags) or "no tags")


def _read_target(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except OSError as err:
        raise ConfigError("--set", f"cannot read {path}: {err.strerror or err}") from None
    except ValueError as err:
        raise ConfigError("--set", f"{path} is not JSON: {err}") from None
    if not isinstance(state, dict) or not isinstance(state.get("local"), dict):
        raise ConfigError("--set", f"{path}: a target state is an object with a 'local' object")
    return state


def _target_state(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    if args.set:
        result = client.set_local_target_state(_read_target(args.set))
        if not ctx.out.json_mode:  # JSON shows the state that results
            action(ctx, "Target state set", result)
    state = dict(client.local_target_state())
    return show(ctx, state, json.dumps(state, indent=2))


# -- streams ----------------------------------------------------------------------------------


def _count_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--count", metavar="N", type=int, help=f"stop after N {what}")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing until Ctrl-C")


def _count_check(args: argparse.Namespace) -> None:
    if args.count is not None and args.count < 1:
        raise ConfigError("--count", "must be 1 or more")


def _when(timestamp_ms: int | None) -> str:
    if timestamp_ms is None:
        return ""
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S ")


def _logs(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    # The stream never ends by itself: without --follow, stop after a screenful or a quiet spell.
    limit = args.count if args.count is not None or args.follow else LOG_LINES
    stream = client.logs(idle_timeout_s=None if args.follow else LOG_IDLE_S)
    try:
        for line in itertools.islice(stream, limit):
            who = line.service_name or ("supervisor" if line.is_system else "")
            ctx.out.result(
                {
                    "message": line.message,
                    "timestamp": line.timestamp_ms,
                    "service": line.service_name,
                    "system": line.is_system,
                },
                text=f"{_when(line.timestamp_ms)}[{who}] {line.message}",
            )
    finally:
        stream.close()
    return EXIT_OK


def _journal_arguments(parser: argparse.ArgumentParser) -> None:
    _count_option(parser, "lines")
    parser.add_argument("--unit", metavar="U", help="one systemd unit only")


def _journal(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    stream = client.journal(
        count=args.count,
        unit=args.unit,
        follow=args.follow,
        idle_timeout_s=None if args.follow else 30.0,
    )
    try:
        for text in itertools.islice(stream, args.count if args.follow else None):
            ctx.out.result({"line": text}, text=text)
    finally:
        stream.close()
    return EXIT_OK


# -- wait, list -------------------------------------------------------------------------------


def _wait_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device-type", metavar="SLUG", help="the device type the card carried")
    parser.add_argument("--os-version", metavar="V", help="the OS version the card carried")
    parser.add_argument(
        "--timeout", metavar="S", type=float, default=300.0, help="give up after S seconds"
    )
    parser.add_argument(
        "--interval", metavar="S", type=float, default=2.0, help="seconds between pings"
    )


def _wait_check(args: argparse.Namespace) -> None:
    if args.timeout <= 0:
        raise ConfigError("--timeout", "must be more than 0 seconds")
    if args.interval <= 0:
        raise ConfigError("--interval", "must be more than 0 seconds")


def _wait(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    check = wait_for_device(
        client,
        device_type=args.device_type,
        os_version=args.os_version,
        timeout_s=args.timeout,
        poll_interval_s=args.interval,
    )
    text = (
        f"{check.address}: up after {check.first_ping_s:.1f} s, {check.device_type}, "
        f"{check.os_version}, supervisor {check.supervisor_version}"
    )
    return show(ctx, check.to_dict(), text)


def _list(_client: None, _args: argparse.Namespace, ctx: CliContext) -> int:
    from flasher.balena.session import BalenaSession
    from flasher.models import Secret
    from flasher.supervisor.registry import list_devices

    session = ctx.session()
    if ctx.sandbox is not None and not session.authenticated:
        session = ctx.own(BalenaSession(session.api_url, Secret("sandbox")))
    devices = list_devices(session)
    lines = [
        f"{d.uuid[:7]}  {d.name:<16} {'online ' if d.online else 'offline'} "
        f"{d.device_type or '?':<18} {d.os_version or '?':<22} {d.app_name or ''}"
        for d in devices
    ]
    return show(ctx, [d.to_dict() for d in devices], "\n".join(lines) or "no devices")


VERBS: tuple[Verb, ...] = (
    Verb(
        "host-config",
        "show or change the hostname and the proxy",
        _host_config,
        _host_config_arguments,
        _host_config_check,
    ),
    Verb(
        "tags",
        "show (or --set KEY=VALUE) the device's tags",
        _tags,
        lambda p: p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[]),
        _tags_check,
    ),
    Verb(
        "target-state",
        "show (or --set FILE, local mode) the local target state",
        _target_state,
        lambda p: p.add_argument("--set", metavar="FILE"),
    ),
    Verb(
        "logs",
        "the services' and supervisor's logs (local mode); without --follow, the next 100 "
        "lines or until 3 s pass without one",
        _logs,
        lambda p: _count_option(p, "lines"),
        _count_check,
    ),
    Verb("journal", "the host's journal", _journal, _journal_arguments, _count_check),
    Verb(
        "wait",
        "wait for a freshly flashed device and check its type and OS",
        _wait,
        _wait_arguments,
        _wait_check,
    ),
    Verb("list", "the devices the balena API knows", _list, needs_device=False),
)
