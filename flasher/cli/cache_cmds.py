"""`flasher os download` (fetch a balenaOS image into the cache) and `flasher cache list|prune`.

os download DEVICE_TYPE [--version V] [--dev] [--file-type .img|.zip|.gz]
            [--image-type raw|flasher] [--sha256 HEX] [-o PATH]
    Resolves the version through the OS model ("latest" = the recommended default-line one,
    else a listed version or a semver range), then downloads GET /download into the image
    cache (resumable, verified, shared between processes). With -o the image is also copied
    to PATH (a folder gets a name like raspberrypi4-64-6.5.50+rev8.img.zip). A progress bar
    shows on a terminal.
    --json: JSON-lines progress events, then one object: device_type, version, file_type,
    image_type, development, sha256, kind, size_bytes, cache_path, output, from_cache,
    downloaded_bytes.

cache list      --json: {cache_dir, total_disk_bytes, images: [CacheEntry.to_dict()]}
cache prune [--older-than DAYS] [--keep N] [--max-size SIZE] [--all]
    --json: {removed: [sha256], freed_bytes, busy: [sha256]}. SIZE takes k/M/G/T (powers of
    1000) or KiB/MiB/GiB/TiB suffixes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
from pathlib import Path
from typing import Any

from flasher.balena.os_model import OsModel
from flasher.cache import CacheEntry, ImageCache
from flasher.cli.context import CliContext
from flasher.cli.output import human_bytes
from flasher.download import download_image
from flasher.errors import EXIT_OK, CacheError, ConfigError
from flasher.provider import os_download_request

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kKMGT])(i?))?B?")
_EXTENSIONS = {"zip": ".img.zip", "gz": ".img.gz", "xz": ".img.xz", "zst": ".img.zst"}


def register(groups: dict[str, Any]) -> None:
    description = "Download a balenaOS image into the local cache (and optionally copy it out)."
    download = groups["os"].add_parser("download", help=description, description=description)
    download.add_argument("device_type", metavar="DEVICE_TYPE", help="device type slug or alias")
    download.add_argument(
        "--version", default="latest", help='"latest" (default), a version or a semver range'
    )
    download.add_argument("--dev", action="store_true", help="the development variant")
    download.add_argument(
        "--file-type", choices=(".img", ".zip", ".gz"), help="what the server sends (default .img)"
    )
    download.add_argument(
        "--image-type", choices=("raw", "flasher"), help="disk image or installation media"
    )
    download.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the download")
    download.add_argument("-o", "--output", metavar="PATH", help="also copy the image here")
    _add_json(download)
    download.set_defaults(handler=download_command)

    listing = groups["cache"].add_parser("list", help="list cached images")
    _add_json(listing)
    listing.set_defaults(handler=list_command)

    prune = groups["cache"].add_parser(
        "prune", help="remove cached images", description="Remove cached images."
    )
    prune.add_argument("--older-than", type=float, metavar="DAYS", help="not used for DAYS")
    prune.add_argument("--keep", type=int, metavar="N", help="keep the N most recently used")
    prune.add_argument("--max-size", metavar="SIZE", help="shrink the cache to at most SIZE")
    prune.add_argument("--all", action="store_true", help="remove everything")
    _add_json(prune)
    prune.set_defaults(handler=prune_command)


def _add_json(parser: argparse.ArgumentParser) -> None:
    # Also accepted after the command; SUPPRESS keeps a `flasher --json ...` from being reset.
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON output"
    )


def parse_size(text: str) -> int:
    """'500M', '2GiB', '1.5G' or plain bytes; ConfigError otherwise."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ConfigError("--max-size", f"{text!r} is not a size like 500M, 2GiB or 1000000")
    number, prefix, binary = float(match.group(1)), match.group(2), match.group(3)
    power = "KMGT".index(prefix.upper()) + 1 if prefix else 0
    return int(number * (1024 if binary else 1000) ** power)


# -- os download -------------------------------------------------------------------------------


def download_command(args: argparse.Namespace, ctx: CliContext) -> int:
    expected = args.sha256.lower() if args.sha256 else None
    if expected is not None and not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise ConfigError("--sha256", "must be 64 hexadecimal digits")
    session = ctx.session()
    # the sandbox listens on a new port each run but always serves the same images
    origin = ctx.cache_origin or session.api_url
    request = os_download_request(
        OsModel(session),
        origin,
        args.device_type,
        args.version,
        development=args.dev,
        file_type=args.file_type,
        image_type=args.image_type,
        expected_sha256=expected,
    )
    slug, version = request.params["deviceType"], request.params["version"]
    cache = ImageCache()
    result = download_image(session, request, cache, on_event=ctx.out.event)
    entry = result.entry
    output = _copy_out(entry, Path(args.output), slug, version, args.dev) if args.output else None
    data = {
        "device_type": slug,
        "version": version,
        "file_type": args.file_type or ".img",
        "image_type": args.image_type,
        "development": args.dev,
        "sha256": entry.sha256,
        "kind": entry.kind,
        "size_bytes": entry.size_bytes,
        "cache_path": str(entry.path),
        "output": str(output) if output else None,
        "from_cache": result.from_cache,
        "downloaded_bytes": result.downloaded_bytes,
    }
    how = "already in the cache" if result.from_cache else "downloaded"
    text = (
        f"{slug} {version}{' (development)' if args.dev else ''}: {entry.kind} image, "
        f"{human_bytes(entry.size_bytes)}, {how}\n  sha256 {entry.sha256}\n  {entry.path}"
    )
    if output:
        text += f"\n  copied to {output}"
    ctx.out.result(data, text)
    return EXIT_OK


def _copy_out(entry: CacheEntry, target: Path, slug: str, version: str, dev: bool) -> Path:
    """A private, writable copy (never a link: editing it must not touch the cache)."""
    if target.is_dir():
        suffix = _EXTENSIONS.get(entry.kind, ".img")
        target = target / f"{slug}-{version}{'-dev' if dev else ''}{suffix}"
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(entry.path, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CacheError(
            f"Cannot copy the image to {target}: {err.strerror}.", path=str(target)
        ) from None
    return target


# -- cache list / prune ------------------------------------------------------------------------


def list_command(_args: argparse.Namespace, ctx: CliContext) -> int:
    cache = ImageCache()
    entries = cache.entries()
    total = sum(e.disk_bytes for e in entries)
    data = {
        "cache_dir": str(cache.root),
        "total_disk_bytes": total,
        "images": [e.to_dict() for e in entries],
    }
    lines = [f"{'SHA256':<14}{'DEVICE TYPE':<22}{'VERSION':<18}{'KIND':<6}{'SIZE':>10}  USED"]
    for e in entries:
        used = e.to_dict()["used_at"][:10]
        lines.append(
            f"{e.sha256[:12]:<14}{e.meta.device_type or '-':<22}{e.meta.os_version or '-':<18}"
            f"{e.kind:<6}{human_bytes(e.disk_bytes):>10}  {used}"
        )
    lines.append(f"{len(entries)} image(s), {human_bytes(total)} on disk in {cache.root}")
    ctx.out.result(data, "\n".join(lines) if entries else lines[-1])
    return EXIT_OK


def prune_command(args: argparse.Namespace, ctx: CliContext) -> int:
    if args.older_than is None and args.keep is None and args.max_size is None and not args.all:
        raise ConfigError(
            "cache prune", "say what to remove: --older-than, --keep, --max-size or --all"
        )
    if args.older_than is not None and args.older_than < 0:
        raise ConfigError("--older-than", "must be zero or more days")
    if args.keep is not None and args.keep < 0:
        raise ConfigError("--keep", "must be zero or more")
    max_size = parse_size(args.max_size) if args.max_size is not None else None
    report = ImageCache().prune(
        older_than_s=args.older_than * 86400 if args.older_than is not None else None,
        keep=args.keep,
        max_size_bytes=max_size,
        everything=args.all,
    )
    data = {
        "removed": [e.sha256 for e in report.removed],
        "freed_bytes": report.freed_bytes,
        "busy": list(report.busy),
    }
    text = f"Removed {len(report.removed)} image(s), freed {human_bytes(report.freed_bytes)}."
    if report.busy:
        text += f" Kept {len(report.busy)} in use by another process."
    ctx.out.result(data, text)
    return EXIT_OK
