"""`flasher sandbox serve`: run the built-in offline balena API in the foreground.

For trying Flasher without an account or network, training operators and demos, and for
pointing other tools (the balena SDK, curl) at a local API. Stops on Ctrl-C.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

from flasher.cli.context import CliContext
from flasher.errors import EXIT_OK, ConfigError
from flasher.sandbox.images import ImageScale
from flasher.sandbox.server import SandboxServer

SCALES = {"default": ImageScale(), "tiny": ImageScale.tiny()}


def register(groups: dict[str, Any]) -> None:
    description = (
        "Serve the built-in offline balena API (catalog, OS versions, synthesized images) "
        "until Ctrl-C. Any non-empty token authenticates as the sandbox user."
    )
    parser = groups["sandbox"].add_parser(
        "serve", help="run the offline balena API", description=description
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; the sandbox has no real authentication)",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=Path,
        help="keep generated images in DIR (default: a temporary directory)",
    )
    parser.add_argument(
        "--image-scale",
        choices=sorted(SCALES),
        default="default",
        help="size of synthesized images (default ~64 MiB, tiny ~20 MiB)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the provisioning-key sequence (default 0)"
    )
    parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace, ctx: CliContext) -> int:
    if not 0 <= args.port <= 65535:
        raise ConfigError("port", "must be between 0 and 65535")
    try:
        server = SandboxServer.start(
            args.host,
            args.port,
            image_scale=SCALES[args.image_scale],
            cache_dir=args.cache_dir,
            seed=args.seed,
        )
    except OSError as err:
        raise ConfigError(
            "port",
            f"cannot listen on {args.host}:{args.port}: {err.strerror or err}",
            hint="choose another --port, or 0 for any free port",
        ) from None
    try:
        devices = [
            {
                "name": device.spec.name,
                "uuid": device.spec.uuid,
                "address": fake.url if fake.up.is_set() else None,
                "needs_key": fake.spec.api_key is not None,
            }
            for device, fake in server.devices.start_all()
        ]
        device_lines = "".join(
            f"  {d['name']:<14} {d['address'] or '(not answering)':<24} "
            f"{'key needed' if d['needs_key'] else 'no key (local mode/unmanaged)'}\n"
            for d in devices
        )
        ctx.out.result(
            {"event": "listening", "url": server.url, "devices": devices},
            text=(
                f"Sandbox balena API listening on {server.url}\n"
                f"Point flasher at it with --api-url {server.url} "
                f"(or FLASHER_API_URL={server.url}); any non-empty --token is accepted.\n"
                f"Fake devices (supervisor API addresses):\n{device_lines}"
                "Press Ctrl-C to stop."
            ),
        )
        ctx.out.stdout.flush()  # a supervising script reads the URL through a pipe
        threading.Event().wait()
    except KeyboardInterrupt:
        ctx.out.info("Sandbox stopped.")
    finally:
        server.close()
    return EXIT_OK
