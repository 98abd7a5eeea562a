"""The verbs of `flasher device`: their arguments, their checks (before any I/O), the client call
and how the answer is shown (text, or JSON with --json).

Keys never reach the output: a regenerated key goes to a file the user names, mode 0600.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flasher.cli.context import CliContext
from flasher.errors import EXIT_OK, ConfigError
from flasher.supervisor.client import SupervisorClient
from flasher.supervisor.errors import DeviceBadRequest
from flasher.supervisor.models import ActionResult

Runner = Callable[[Any, argparse.Namespace, CliContext], int]


def _no_arguments(_parser: argparse.ArgumentParser) -> None:
    return None


def _no_check(_args: argparse.Namespace) -> None:
    return None


@dataclass(frozen=True)
class Verb:
    name: str
    help: str
    call: Runner
    add_arguments: Callable[[argparse.ArgumentParser], object] = field(default=_no_arguments)
    check: Callable[[argparse.Namespace], None] = field(default=_no_check)
    needs_device: bool = True
    fleet: bool = False  # may go to a whole fleet (--fleet)

    def run(
        self, client: SupervisorClient | None, args: argparse.Namespace, ctx: CliContext
    ) -> int:
        return self.call(client, args, ctx)


def show(ctx: CliContext, data: Any, text: str) -> int:
    ctx.out.result(data, text=text)
    return EXIT_OK


def action(ctx: CliContext, done: str, result: ActionResult) -> int:
    if result.connection_dropped:
        text = f"{done}; the device closed the connection as it went down."
    else:
        said = f": {result.message}" if result.message and result.message != "OK" else ""
        text = f"{done} (HTTP {result.status}){said}."
    if result.container_id:
        text += f"\ncontainer {result.container_id}"
    for n, reply in enumerate(result.replies, 1):
        said = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
        text += f"\n  device {n}: HTTP {reply.status} {said}".rstrip()
    show(ctx, result.to_dict(), text)
    failed = any(reply.status >= 400 for reply in result.replies)
    return 1 if failed else EXIT_OK


def force_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="override update locks")


def _app_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app_id", metavar="APP_ID", type=int, help="the fleet (app) id")


def _service_options(parser: argparse.ArgumentParser) -> None:
    _app_id(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--service", metavar="NAME", help="one service, by name")
    which.add_argument("--image-id", metavar="ID", type=int, help="one service, by image id")
    force_option(parser)


# -- simple reads -----------------------------------------------------------------------------


def _ping(client: SupervisorClient, _args: argparse.Namespace, ctx: CliContext) -> int:
    ok = client.ping()
    return show(ctx, {"ok": ok}, f"{client.transport.where}: {'OK' if ok else 'unexpected answer'}")


def _healthy(client: SupervisorClient, _args: argparse.Namespace, ctx: CliContext) -> int:
    ok = client.healthy()
    show(ctx, {"healthy": ok}, "healthy" if ok else "unhealthy (HTTP 500)")
    return EXIT_OK if ok else 1


def _info(client: SupervisorClient, _args: argparse.Namespace, ctx: CliContext) -> int:
    state = client.device()
    rows = [
        ("OS", state.os_version),
        ("supervisor", state.supervisor_version),
        ("status", state.status),
        ("commit", state.commit),
        ("IP addresses", " ".join(state.ip_addresses)),
        ("MAC addresses", " ".join(state.mac_addresses)),
        ("update pending", state.update_pending),
        ("update downloaded", state.update_downloaded),
        ("update failed", state.update_failed),
    ]
    text = "\n".join(f"{k + ':':<19}{'' if v is None else v}" for k, v in rows)
    return show(ctx, dict(state.raw), text)


def _device_info(client: SupervisorClient, _args: argparse.Namespace, ctx: CliContext) -> int:
    info = client.device_info()
    data = {"device_type": info.device_type, "arch": info.arch}
    return show(ctx, data, f"device type: {info.device_type}\narch:        {info.arch}")


def _name(client: SupervisorClient, _args: argparse.Namespace, ctx: CliContext) -> int:
    name = client.device_name()
    return show(ctx, {"name": name}, name)


def _version(client: SupervisorClient, _args: argparse.Namespace, ctx: CliContext) -> int:
    version = client.version()
    return show(ctx, {"version": version}, f"supervisor {version}")


def _status(client: SupervisorClient, _args: argparse.Namespace, ctx: CliContext) -> int:
    status = client.state_status()
    lines = [f"app state: {status.app_state}", f"release:   {status.release}"]
    lines += [f"  {c.service_name:<16} {c.status}" for c in status.containers]
    data = {
        "app_state": status.app_state,
        "release": status.release,
        "overall_download_progress": status.overall_download_progress,
        "containers": [c.__dict__ for c in status.containers],
        "images": [i.__dict__ for i in status.images],
    }
    return show(ctx, data, "\n".join(lines))


def _apps(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    if args.app_id is not None:
        state = client.app_state(args.app_id)
        return show(ctx, state, json.dumps(state, indent=2))
    apps = client.apps()
    lines = []
    for app in apps:
        lines.append(f"{app.name} (app {app.app_id}) commit {app.commit}")
        lines += [f"  {s.name:<16} {s.status}" for s in app.services]
    data = [{**app.__dict__, "services": [s.__dict__ for s in app.services]} for app in apps]
    return show(ctx, data, "\n".join(lines) or "no apps")


def _vpn(client: SupervisorClient, _args: argparse.Namespace, ctx: CliContext) -> int:
    vpn = client.vpn()
    data = {"enabled": vpn.enabled, "connected": vpn.connected}
    text = f"VPN {'enabled' if vpn.enabled else 'disabled'}, " + (
        "connected" if vpn.connected else "not connected"
    )
    return show(ctx, data, text)


def _container_id(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    ids = client.container_ids(args.service)
    return show(ctx, dict(ids), "\n".join(f"{k:<16} {v}" for k, v in ids.items()))


# -- actions ----------------------------------------------------------------------------------


def _identify(client: SupervisorClient, _args: argparse.Namespace, ctx: CliContext) -> int:
    return action(ctx, "Blinking the device's LED for 15 s", client.blink())


def _update(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    result = client.update(force=args.force)
    done = "Update check started" if result.status == 204 else "Update check noted"
    return action(ctx, done, result)


def _reboot(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    return action(ctx, "Reboot accepted", client.reboot(force=args.force))


def _shutdown(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    return action(ctx, "Shutdown accepted", client.shutdown(force=args.force))


def _restart(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    if args.service is None and args.image_id is None:
        result = client.restart_app(args.app_id, force=args.force)
        return action(ctx, f"Restarted every service of app {args.app_id}", result)
    result = client.restart_service(
        args.app_id, service_name=args.service, image_id=args.image_id, force=args.force
    )
    return action(ctx, f"Restarted {args.service or f'image {args.image_id}'}", result)


def _single_container(call: Callable[[], ActionResult]) -> ActionResult:
    """A whole-app stop/start (v1) works on single-container apps only."""
    try:
        return call()
    except DeviceBadRequest as err:
        if "multi-container" in err.server_message:
            err.hint = "This app has several services: name one with --service."
        raise


def _stop(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    if args.service is None and args.image_id is None:
        result = _single_container(lambda: client.stop_app(args.app_id, force=args.force))
        return action(ctx, f"Stopped app {args.app_id}", result)
    result = client.stop_service(
        args.app_id, service_name=args.service, image_id=args.image_id, force=args.force
    )
    return action(ctx, f"Stopped {args.service or f'image {args.image_id}'}", result)


def _start(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    if args.service is None and args.image_id is None:
        result = _single_container(lambda: client.start_app(args.app_id))
        return action(ctx, f"Started app {args.app_id}", result)
    result = client.start_service(
        args.app_id, service_name=args.service, image_id=args.image_id, force=args.force
    )
    return action(ctx, f"Started {args.service or f'image {args.image_id}'}", result)


def _purge_arguments(parser: argparse.ArgumentParser) -> None:
    _app_id(parser)
    force_option(parser)


def _purge(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    result = client.purge(args.app_id, force=args.force)
    return action(ctx, f"Purged the data of app {args.app_id}", result)


def _cleanup(client: SupervisorClient, _args: argparse.Namespace, ctx: CliContext) -> int:
    return action(ctx, "Removed unreferenced volumes", client.cleanup_volumes())


def _regenerate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-file",
        metavar="PATH",
        required=True,
        help="write the new key to PATH (mode 0600); it is never printed",
    )


def _regenerate_check(args: argparse.Namespace) -> None:
    if os.path.exists(args.key_file):
        raise ConfigError("--key-file", f"{args.key_file} exists; give a new file")
    parent = os.path.dirname(os.path.abspath(args.key_file))
    if not os.path.isdir(parent):
        raise ConfigError("--key-file", f"{parent} is not a directory")


def _regenerate(client: SupervisorClient, args: argparse.Namespace, ctx: CliContext) -> int:
    key = client.regenerate_api_key()
    fd = os.open(args.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key.reveal() + "\n")
    text = (
        f"The supervisor's API key was replaced; the old key no longer works. The new key is "
        f"in {args.key_file}."
    )
    return show(ctx, {"key_file": args.key_file}, text)


VERBS: tuple[Verb, ...] = (
    Verb("ping", "check that the supervisor answers (no key needed)", _ping),
    Verb("healthy", "the supervisor's own health check (no key needed)", _healthy),
    Verb("identify", "blink the device's LED for 15 s", _identify, fleet=True),
    Verb("info", "the device state (/v1/device)", _info),
    Verb("device-info", "device type and architecture (/v2/local/device-info)", _device_info),
    Verb("name", "the device's name", _name),
    Verb("version", "the supervisor's version", _version),
    Verb("status", "containers, images and whether the state is applied", _status),
    Verb(
        "apps",
        "the apps and services on the device",
        _apps,
        lambda p: p.add_argument("app_id", metavar="APP_ID", type=int, nargs="?"),
    ),
    Verb("update", "check for an update now", _update, force_option, fleet=True),
    Verb("reboot", "reboot the device", _reboot, force_option, fleet=True),
    Verb("shutdown", "shut the device down", _shutdown, force_option, fleet=True),
    Verb("restart", "restart an app, or one service", _restart, _service_options, fleet=True),
    Verb("stop", "stop an app (single-container) or one service", _stop, _service_options),
    Verb("start", "start an app (single-container) or one service", _start, _service_options),
    Verb("purge", "clear an app's /data and volumes", _purge, _purge_arguments, fleet=True),
    Verb(
        "container-id",
        "service names and their container ids",
        _container_id,
        lambda p: p.add_argument("--service", metavar="NAME"),
    ),
    Verb(
        "regenerate-api-key",
        "replace the supervisor API key (written to --key-file)",
        _regenerate,
        _regenerate_arguments,
        _regenerate_check,
    ),
    Verb("cleanup-volumes", "remove volumes no service refers to", _cleanup),
    Verb("vpn", "the device's VPN connection", _vpn),
)
