"""The options `flash` and `bench` share about what is written: the source, the image type, the
block map (--bmap, --write-all), the source's expected SHA-256 (--sha256) and the read-back
(--no-verify). One definition, so everything `flash` accepts, the bench accepts.
"""

from __future__ import annotations

import argparse

from flasher.cli.integrity_opts import parse_sha256_arg
from flasher.provider import SourceSpec


def add_source_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        nargs="?",
        metavar="SOURCE",
        help="image file or http(s) URL (omit with --device-type)",
    )


def add_write_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--image-type",
        choices=("raw", "flasher"),
        help="disk image or installation media (default: the device type's)",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip reading the cards back (not recommended)"
    )
    parser.add_argument(
        "--write-all",
        action="store_true",
        help="write every byte, not only the blocks that hold data",
    )
    parser.add_argument("--bmap", metavar="FILE", help="a bmaptool .bmap to use as the block map")
    parser.add_argument(
        "--sha256",
        metavar="HEX",
        type=parse_sha256_arg,
        help="expected SHA-256 of the image (decoded, or the file as given), checked before "
        "writing (the bench needs it, or a .bmap with checksums, for a source without "
        "checksums of its own)",
    )


def source_spec(args: argparse.Namespace) -> SourceSpec:
    """The image named by SOURCE, or by --device-type and --version (default: the latest)."""
    if args.source:
        return SourceSpec.from_argument(args.source)
    return SourceSpec(
        device_type=args.device_type,
        version=args.os_version or "latest",
        image_type=args.image_type,
    )
