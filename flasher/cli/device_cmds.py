"""`flasher device …`: talk to a device's balena Supervisor, one verb per capability.

The device is `--address URL` (with `--api-key-file`/`--api-key` or $BALENA_SUPERVISOR_API_KEY;
$BALENA_SUPERVISOR_ADDRESS when no address is given), or `--uuid`/`--name` through the balena
API's supervisor proxy with the CLI's usual login, or, with `--sandbox`, one of the sandbox's
devices (`--name kitchen-pi`, `--direct` to skip the proxy). These options and `--json` are
accepted before and after the verb. Keys are never printed, logged or passed to a child.
"""

from __future__ import annotations

import argparse
from typing import Any

from flasher.cli import device_more, device_verbs
from flasher.cli.context import CliContext
from flasher.errors import ConfigError
from flasher.models import Secret
from flasher.supervisor.client import SupervisorClient
from flasher.supervisor.errors import DeviceLocked, DeviceUnauthorized
from flasher.supervisor.transport import DirectTransport, ProxyTarget, ProxyTransport

DESCRIPTION = (
    "Talk to a balenaOS device's supervisor: directly (--address, with the device's supervisor "
    "API key unless it is in local mode) or through the balena API (--uuid or --name, with your "
    "balena login)."
)


def _target_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The device-target options; on verbs they default to 'not given' so that a value given
    before the verb is kept."""
    default: Any = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("device")
    group.add_argument(
        "--address",
        metavar="URL",
        default=default,
        help="the supervisor's address (host, host:port or http://host:port; default port "
        "48484; env BALENA_SUPERVISOR_ADDRESS)",
    )
    group.add_argument(
        "--api-key-file",
        metavar="PATH",
        default=default,
        help="read the supervisor API key from PATH (else env BALENA_SUPERVISOR_API_KEY)",
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        default=default,
        help="the supervisor API key (visible to other users in the process list; prefer "
        "--api-key-file or the environment)",
    )
    group.add_argument(
        "--uuid", metavar="UUID", default=default, help="reach the device through the balena API"
    )
    group.add_argument(
        "--name", metavar="NAME", default=default, help="reach the device named NAME (balena API)"
    )
    group.add_argument(
        "--fleet",
        metavar="APP_ID",
        type=int,
        default=default,
        help="send an action to every online device of a fleet (balena API)",
    )
    group.add_argument(
        "--direct",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="with --sandbox: talk straight to the sandbox device's supervisor",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the answer as JSON",
    )


def register(groups: dict[str, Any]) -> None:
    parser = groups[""].add_parser(
        "device", help="talk to a device's supervisor", description=DESCRIPTION
    )
    _target_options(parser, top=True)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    parser.set_defaults(handler=_usage(parser))
    for verb in (*device_verbs.VERBS, *device_more.VERBS):
        sub = verbs.add_parser(verb.name, help=verb.help, description=verb.help)
        verb.add_arguments(sub)
        _target_options(sub, top=False)
        sub.set_defaults(handler=_runner(verb))


def _usage(parser: argparse.ArgumentParser) -> Any:
    def show(_args: argparse.Namespace, _ctx: CliContext) -> int:
        parser.print_help()
        return 2

    return show


def _runner(verb: device_verbs.Verb) -> Any:
    def run(args: argparse.Namespace, ctx: CliContext) -> int:
        verb.check(args)  # invalid input is refused before any I/O
        if args.fleet is not None and not verb.fleet:
            raise ConfigError("--fleet", f"'{verb.name}' is for one device; give --uuid or --name")
        if verb.needs_device:
            try:
                with open_client(args, ctx) as client:
                    return verb.run(client, args, ctx)
            except DeviceLocked as err:
                err.hint = (
                    "Wait for the application to release its update lock, or add --force to "
                    "override it."
                )
                raise
            except DeviceUnauthorized as err:
                err.hint = (
                    f"Use {err.expected_key}: pass it with --api-key-file, or set "
                    "BALENA_SUPERVISOR_API_KEY."
                )
                raise
        return verb.run(None, args, ctx)

    return run


def _read_key(args: argparse.Namespace) -> Secret | None:
    path = getattr(args, "api_key_file", None)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError as err:
            raise ConfigError(
                "--api-key-file", f"cannot read {path}: {err.strerror or err}"
            ) from None
        if not text:
            raise ConfigError("--api-key-file", f"{path} is empty")
        return Secret(text)
    key = getattr(args, "api_key", None)
    return Secret(key) if key else None


def open_client(args: argparse.Namespace, ctx: CliContext) -> SupervisorClient:
    """The client for the device the options name (checked before any I/O)."""
    address, uuid, name, fleet = args.address, args.uuid, args.name, args.fleet
    options = (("--address", address), ("--uuid", uuid), ("--name", name), ("--fleet", fleet))
    given = [n for n, v in options if v is not None]
    if len(given) > 1:
        raise ConfigError("device", f"give only one of {', '.join(given)}")
    key = _read_key(args)
    sandbox = bool(getattr(args, "sandbox", False))
    if (uuid or name or fleet is not None) and key is not None and not args.direct:
        raise ConfigError(
            "--api-key",
            "the balena API's proxy uses your balena login, not a supervisor API key",
        )
    if uuid or name or fleet is not None:
        return _proxied(args, ctx, uuid=uuid, name=name, sandbox=sandbox, key=key)
    try:
        return SupervisorClient(DirectTransport.from_environment(address, key))
    except ValueError as err:
        if address:
            raise ConfigError("--address", str(err)) from None
        raise ConfigError(
            "device",
            "no device given",
            hint="Give --address (or set BALENA_SUPERVISOR_ADDRESS), --uuid or --name.",
        ) from None


def _proxied(
    args: argparse.Namespace,
    ctx: CliContext,
    *,
    uuid: str | None,
    name: str | None,
    sandbox: bool,
    key: Secret | None,
) -> SupervisorClient:
    from flasher.balena.session import BalenaSession
    from flasher.supervisor.registry import find_device, is_full_uuid

    session = ctx.session()
    if sandbox and not session.authenticated:
        # The sandbox's proxy wants a login like the real one; any token is the sandbox user.
        session = ctx.own(BalenaSession(session.api_url, Secret("sandbox")))
    if args.direct:
        if not sandbox or ctx.sandbox is None:
            raise ConfigError("--direct", "only the sandbox's devices can be reached directly")
        devices = ctx.sandbox.devices
        found = [d for d in devices.devices if name in (None, d.spec.name)]
        found = [d for d in found if uuid is None or d.spec.uuid.startswith(uuid.lower())]
        if len(found) != 1:
            raise ConfigError("--name", "names no single sandbox device")
        fake = devices.supervisor(found[0].spec.name)
        sandbox_key = Secret(fake.state.api_key) if fake.state.api_key else None
        return SupervisorClient(DirectTransport(fake.url, key or sandbox_key))
    if args.fleet is not None:
        return SupervisorClient(ProxyTransport(session, ProxyTarget(app_id=args.fleet)))
    if uuid is not None and is_full_uuid(uuid):
        # The proxy takes it as it is; only a prefix or a name needs the device list.
        return SupervisorClient(ProxyTransport(session, ProxyTarget(uuid=uuid.lower())))
    device = find_device(session, uuid=uuid, name=name)
    return SupervisorClient(ProxyTransport(session, ProxyTarget(uuid=device.uuid)))
