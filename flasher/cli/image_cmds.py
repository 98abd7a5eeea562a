"""`flasher os configure` (write config.json and network keyfiles into an image) and
`flasher image inspect` (show what an image is).

os configure IMAGE [-o OUTPUT] [device options]
    Without -o the raw IMAGE is edited in place, as `balena os configure` does; a compressed
    IMAGE needs -o. With -o, OUTPUT becomes a configured raw image made from any supported
    source (.img, .zip, .gz, .xz, .zst, .bz2), readable by its owner only (it holds keys);
    IMAGE is never changed. With --sha256 the image (decoded, or the file as given) must have
    that SHA-256 before anything is configured. The device type and balenaOS version default
    to the image's own.
    With --fleet and no provisioning key, a logged-in user gets config.json from the balena API,
    as with `balena os configure --fleet`. Settings are checked before the image is read (except
    the device type, which may come from the image). Same image + same settings = same bytes =
    same SHA-256.

    --json prints one object (the last line; unpacking a compressed IMAGE first prints its
    progress as JSON-lines events): image, output (null in place), in_place, source_kind,
    size_bytes, boot_partition, boot_label, device_type, device_type_aliases, device_type_name,
    os_version, variant, meta_balena_version, installer, files_written, config_sha256,
    overlay_ranges, overlay_bytes, image_sha256 (null in place).

image inspect IMAGE
    Partitions, boot partition, device type, balenaOS version, config.json (secrets shown as
    "***"), keyfiles in system-connections/ and how much of the image holds data. Compressed
    images are unpacked to a temporary file first (TMPDIR), then removed.

    --json prints one object, as the last line after any unpacking progress events (stable;
    keys are only ever added):
      path, source_kind ("raw"|"zip"|"gz"|"xz"|"zst"|"bz2"), file_size_bytes, size_bytes (raw),
      unpacked (bool), partition_table {scheme "mbr"|"gpt"|"none", disk_id},
      partitions [{number, start_bytes, size_bytes, type_id, filesystem, label, name, bootable,
      is_boot}], boot_partition (number|null), device_type, device_type_aliases [],
      device_type_name, os_version, variant, meta_balena_version, installer (bool),
      config (redacted object|null), keyfiles [names], allocation {mapped_bytes, size_bytes,
      mapped_percent, source}, problems [{code, message, hint}].
    Problems (no boot partition, no config.json, unreadable manifests) do not fail the command;
    unreadable, corrupt or truncated images do (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flasher.cli.config_opts import (
    add_device_config_arguments,
    device_config_for_image,
    precheck_device_config,
)
from flasher.cli.context import CliContext
from flasher.cli.integrity_opts import parse_sha256_arg
from flasher.cli.output import human_bytes
from flasher.errors import EXIT_OK, ConfigError, ImageError
from flasher.image.byteio import FileReadWriter
from flasher.image.configure import prepare_image
from flasher.image.inspection import ImageInfo, inspect_image, read_image_identity
from flasher.image.integrity import check_image
from flasher.image.sources import ImageSource, SourceKind, open_source
from flasher.models import DeviceConfig

# A configured image holds Wi-Fi and provisioning keys: its owner alone may read it.
PRIVATE_FILE_MODE = 0o600


def register(groups: dict[str, Any]) -> None:
    description = (
        "Write config.json and network settings into a balenaOS image: in place (raw .img), "
        "or into a new raw image with -o."
    )
    configure = groups["os"].add_parser("configure", help=description, description=description)
    configure.add_argument("image", metavar="IMAGE", help="balenaOS image (.img, .zip, .gz, ...)")
    configure.add_argument(
        "-o", "--output", metavar="OUTPUT", help="write a configured raw image here instead"
    )
    configure.add_argument(
        "--sha256",
        metavar="HEX",
        type=parse_sha256_arg,
        help="expected SHA-256 of the image (decoded, or as given); checked before configuring",
    )
    _add_json(configure)
    add_device_config_arguments(configure)
    configure.set_defaults(handler=configure_command)

    description = "Show an image's partitions, device type, OS version and configuration."
    inspect = groups["image"].add_parser("inspect", help=description, description=description)
    inspect.add_argument("image", metavar="IMAGE", help="disk image (.img, .zip, .gz, ...)")
    _add_json(inspect)
    inspect.set_defaults(handler=inspect_command)


def _add_json(parser: argparse.ArgumentParser) -> None:
    # Also accepted after the command; SUPPRESS keeps a `flasher --json ...` from being reset.
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON output"
    )


# -- os configure ----------------------------------------------------------------------------


def _device_config(
    args: argparse.Namespace, ctx: CliContext, raw_path: Path, name: str
) -> DeviceConfig:
    """The settings, with the image's device type and version as defaults; with --fleet and no
    provisioning key, config.json comes from the balena API (as `balena os configure --fleet`)."""
    return device_config_for_image(args, ctx, read_image_identity(raw_path, name=name))


def _check_output(image: Path, output: Path) -> None:
    if output.exists():
        if image.exists() and os.path.samefile(image, output):
            raise ConfigError(
                "output", "is the input image", hint="leave -o out to edit the image in place"
            )
        if not output.is_file():
            raise ConfigError(
                "output",
                f"{output} is not a regular file",
                hint="to write a drive, use 'flasher flash'",
            )
    if not output.parent.is_dir():
        raise ConfigError("output", f"the folder {output.parent} does not exist")


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn a failed write (disk full, no permission) into an error naming the file."""
    try:
        yield
    except OSError as err:
        raise ImageError(
            str(path),
            f"cannot be written: {err.strerror or err}",
            problem="not_writable",
            hint="check the free space and permissions, or use -o OUTPUT elsewhere",
        ) from None


def _configure_in_place(
    args: argparse.Namespace, ctx: CliContext, image: Path, source: ImageSource
) -> dict[str, Any]:
    if source.kind is not SourceKind.RAW:
        raise ImageError(
            str(image),
            f"is a {source.kind.value} file and cannot be configured in place",
            problem="compressed",
            hint="use -o OUTPUT to write a configured raw image",
        )
    cfg = _device_config(args, ctx, image, str(image))
    if args.sha256:
        check_image(image, image, args.sha256, on_event=ctx.out.event)
    with prepare_image(image, cfg) as prepared:
        with _writing(image), FileReadWriter(image, private=True) as target:
            prepared.overlay.apply_in_place(target)
        return {**prepared.summary(), "image_sha256": None}


def _configure_copy(
    args: argparse.Namespace, ctx: CliContext, image: Path, source: ImageSource, output: Path
) -> dict[str, Any]:
    _check_output(image, output)
    if source.kind is SourceKind.RAW:
        cfg = _device_config(args, ctx, image, str(image))
        if args.sha256:
            check_image(image, image, args.sha256, on_event=ctx.out.event)
        with prepare_image(image, cfg) as prepared:
            with _writing(output):
                prepared.overlay.write_to(output)
            return {**prepared.summary(), "image_sha256": prepared.sha256()}
    # Decompress once straight into the output's folder, configure that file, then rename it.
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmp:
        raw = Path(tmp) / "image.raw"
        source.unpack_to(raw, on_event=ctx.out.event)
        if args.sha256:
            check_image(image, raw, args.sha256, on_event=ctx.out.event)
        cfg = _device_config(args, ctx, raw, str(image))
        with prepare_image(raw, cfg) as prepared:
            with _writing(output), FileReadWriter(raw) as target:
                prepared.overlay.apply_in_place(target)
                os.chmod(raw, PRIVATE_FILE_MODE)
                os.replace(raw, output)
            return {**prepared.summary(), "image_sha256": prepared.sha256()}


def configure_command(args: argparse.Namespace, ctx: CliContext) -> int:
    precheck_device_config(args)
    image = Path(args.image)
    output = Path(args.output) if args.output else None
    source = open_source(image)
    if output is None:
        summary = _configure_in_place(args, ctx, image, source)
    else:
        summary = _configure_copy(args, ctx, image, source, output)
    result = {
        **summary,
        "image": str(image),
        "output": str(output) if output else None,
        "in_place": output is None,
        "source_kind": source.kind.value,
    }
    ctx.out.result(result, _configure_text(result))
    return EXIT_OK


def _configure_text(r: dict[str, Any]) -> str:
    where = f"Configured {r['image']} in place" if r["in_place"] else f"Wrote {r['output']}"
    version = r["os_version"] or "unknown"
    if r["variant"]:
        version += f" ({r['variant']})"
    lines = [
        f"{where}.",
        f"  device type     {r['device_type'] or 'unknown'}",
        f"  balenaOS        {version}",
        f"  boot partition  {r['boot_partition']} ({r['boot_label'] or 'no label'})",
        f"  files written   {', '.join(r['files_written'])}",
        f"  config sha256   {r['config_sha256']}",
    ]
    if r["image_sha256"]:
        lines.append(f"  image sha256    {r['image_sha256']}")
    return "\n".join(lines)


# -- image inspect ---------------------------------------------------------------------------


def inspect_command(args: argparse.Namespace, ctx: CliContext) -> int:
    info = inspect_image(args.image, on_event=ctx.out.event)
    ctx.out.result(info.to_dict(), _inspect_text(info))
    return EXIT_OK


def _inspect_text(info: ImageInfo) -> str:
    size = f"{human_bytes(info.size_bytes)} ({info.size_bytes} bytes)"
    if info.source_kind != "raw":
        size += f", {human_bytes(info.file_size_bytes)} as {info.source_kind}"
        if info.unpacked:
            size += " (unpacked to a temporary file to inspect)"
    table = info.scheme.upper() + (f", disk id {info.disk_id}" if info.disk_id else "")
    lines = [
        f"Image          {info.path}",
        f"Size           {size}",
        f"Data           {human_bytes(info.mapped_bytes)} mapped, "
        f"{100 * info.mapped_fraction:.1f} % of the image",
        f"Table          {table}",
        "Partitions",
    ]
    type_width = max([4, *(len(p.type_id) for p in info.partitions)])
    lines.append(
        f"  {'#':>2}  {'start':>10}  {'size':>10}  {'type':<{type_width}}  {'fs':<8}  label / name"
    )
    for p in info.partitions:
        names = " / ".join(n for n in (p.label, p.name) if n) or "-"
        mark = "  (boot)" if p.is_boot else ""
        lines.append(
            f"  {p.number:>2}  {human_bytes(p.start_bytes):>10}  {human_bytes(p.size_bytes):>10}  "
            f"{p.type_id:<{type_width}}  {p.filesystem:<8}  {names}{mark}"
        )
    ident = info.identity
    if ident.device_type:
        named = f" ({ident.device_type_name})" if ident.device_type_name else ""
        kind = ", installer image" if ident.installer else ""
        lines.append(f"Device type    {ident.device_type}{named}{kind}")
    if ident.os_version:
        variant = f", variant {ident.variant}" if ident.variant else ""
        lines.append(f"balenaOS       {ident.os_version}{variant}")
    if info.config is not None:
        lines.append("config.json    (secrets shown as ***)")
        pretty = json.dumps(info.config, indent=2, ensure_ascii=False)
        lines += [f"  {line}" for line in pretty.splitlines()]
    if info.boot_partition is not None:
        lines.append(f"Keyfiles       {', '.join(info.keyfiles) or 'none'}")
    for problem in info.problems:
        lines.append(f"Problem        {problem.message}")
        if problem.hint:
            lines.append(f"               hint: {problem.hint}")
    return "\n".join(lines)
