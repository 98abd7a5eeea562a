"""`flasher config generate`: a device's config.json, without an image.

The output is the product: stdout (or `-o FILE`) gets the exact bytes an image would hold,
secrets included, like `balena config generate`. With --json, stdout gets `{"config": {...}}`
holding the same values; with `-o FILE` it gets the path, size and a redacted copy instead.

With `--fleet` and no provisioning key (neither FLASHER_PROVISIONING_KEY nor `--config` with
one), the balena API generates the file (POST /download-config, which mints a provisioning key)
when logged in; the options are then layered on its answer.

As with the balena API, Wi-Fi settings go into the `wifiSsid`/`wifiKey` keys so that the file
can be fed back to `flasher os configure --config` or `balena os configure --config`. Settings
config.json cannot carry (static IP, extra keyfiles, a hidden network) are refused here: they
belong to the image, so they are given to `os configure` or `flash`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from flasher.balena.config import dump_config, redact_config, render_config_json
from flasher.cli.config_opts import (
    add_device_config_arguments,
    device_config_from_args,
    with_fleet_config_from_api,
)
from flasher.cli.context import CliContext
from flasher.errors import EXIT_OK, ConfigError

# (argparse dest, field shown in the error, option name)
_IMAGE_ONLY_OPTIONS = (
    ("ip", "ipv4.address", "--ip"),
    ("netmask", "ipv4.netmask", "--netmask"),
    ("gateway", "ipv4.gateway", "--gateway"),
    ("dns", "ipv4.dns", "--dns"),
    ("system_connections", "system_connection", "--system-connection"),
    ("hidden", "hidden", "--hidden"),
)


def register(groups: dict[str, Any]) -> None:
    description = "Generate a device's config.json (to stdout, or to a file with -o)."
    parser = groups["config"].add_parser("generate", help=description, description=description)
    add_device_config_arguments(parser)
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE (mode 600) instead of stdout"
    )
    parser.set_defaults(handler=generate)


def _reject_image_only_options(args: argparse.Namespace) -> None:
    for dest, field, option in _IMAGE_ONLY_OPTIONS:
        if getattr(args, dest, None):
            raise ConfigError(
                field,
                f"{option} cannot be stored in config.json; it is written into the image",
                hint=f"pass {option} to 'flasher os configure' or 'flasher flash' instead",
            )


def write_private_file(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, readable by its owner only (it holds keys)."""
    directory = path.parent
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        os.unlink(temp_name)
        raise


def generate(args: argparse.Namespace, ctx: CliContext) -> int:
    _reject_image_only_options(args)
    cfg = with_fleet_config_from_api(device_config_from_args(args, expect_remote_config=True), ctx)
    config = render_config_json(cfg, include_wifi=True)
    data = dump_config(config)
    output = getattr(args, "output", None)
    if output and output != "-":
        path = Path(output)
        try:
            write_private_file(path, data)
        except OSError as err:
            raise ConfigError("output", f"cannot write {output}: {err.strerror or err}") from None
        summary = {"path": str(path), "size_bytes": len(data), "config": redact_config(config)}
        if ctx.out.json_mode:
            ctx.out.result(summary)
        else:
            ctx.out.info(f"Wrote {path} ({len(data)} bytes).")
        return EXIT_OK
    if ctx.out.json_mode:
        ctx.out.result({"config": config})
        return EXIT_OK
    stream = ctx.out.stdout
    binary = getattr(stream, "buffer", None)
    # A terminal gets a final newline so the prompt does not land on the JSON; a pipe or file
    # gets exactly the config.json bytes.
    tail = b"\n" if stream.isatty() else b""
    if binary is not None:
        stream.flush()
        binary.write(data + tail)
        binary.flush()
    else:
        stream.write((data + tail).decode("utf-8"))
        stream.flush()
    return EXIT_OK
