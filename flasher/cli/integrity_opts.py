"""The CLI's words for source integrity: parsing `--sha256` and describing what protects an
image in a summary."""

from __future__ import annotations

import argparse

from flasher.errors import ConfigError
from flasher.image.integrity import Integrity, IntegrityReport, parse_sha256


def parse_sha256_arg(text: str) -> str:
    """argparse type for `--sha256`: 64 hex digits, any case."""
    try:
        return parse_sha256(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(err.rule) from None


def integrity_text(report: IntegrityReport) -> str:
    """One line: the format's own check, and what else proved the bytes."""
    if report.kind is Integrity.NONE:
        own = "none (the source format carries no checksum)"
    else:
        own = f"{report.kind.value} (checked while decoding)"
    if report.sha256_matched == "image":
        return f"{own}; SHA-256 of the decoded image matched"
    if report.sha256_matched == "source":
        return f"{own}; SHA-256 of the source file matched"
    if report.bmap_checked:
        return f"{own}; the .bmap's checksums matched"
    return own
