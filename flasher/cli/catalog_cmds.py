"""Catalog commands: device types and balenaOS versions, sizes and update paths.

    flasher device-types [--json]
    flasher os versions DEVICE_TYPE [--include-draft | --all] [--esr] [--json]
    flasher os latest DEVICE_TYPE [RANGE] [--esr] [--json]
    flasher os download-size DEVICE_TYPE [--version V] [--json]
    flasher os update-type DEVICE_TYPE FROM TO [--json]
    flasher os update-targets DEVICE_TYPE FROM [--include-draft] [--esr] [--json]
    flasher os supervisor-releases ARCH [--json]
    flasher os arch-compatible OS_ARCH APP_ARCH [--json]

DEVICE_TYPE may be a slug or an alias ("nuc", "raspberrypi"). `os versions` lists the default
OS line, or the ESR line with --esr (as `balena os versions` does); --all adds drafts,
invalidated and failed releases (the SDK's getAllOsVersions). `os latest` without RANGE
(or with latest/recommended/default) answers for the default line, or the ESR line with --esr;
an explicit RANGE ("^6", "~2.80.3", an exact version) searches every line unless --esr.
`os update-targets` lists targets on the line FROM is on; --esr lists ESR targets (a device on
the default line may move to ESR). `os supervisor-releases` lists the balena supervisor
releases for a CPU architecture (slug such as aarch64, or its numeric id), newest first;
`os arch-compatible` says whether an OS of OS_ARCH runs containers built for APP_ARCH.

--json output (one JSON object on stdout; field names are stable):
    device-types    {"device_types": [{"slug", "name", "arch", "aliases": [str],
                                       "is_private": bool, "installer_media": bool}]}
    os versions     {"device_type", "os_type": "default"|"esr",
                     "versions": [{"version", "os_type", "line", "variant", "recommended": bool,
                                   "known_issue", "stripped_version", "based_on_version",
                                   "is_final": bool, "invalidated": bool, "id"}]}
    os latest       {"device_type", "range", "os_type": "default"|"esr"|null, "version"}
    os download-size {"device_type", "version", "size_bytes"}
    os update-type  {"device_type", "from", "to", "update_type": "balenahup"|"takeover"}
    os update-targets {"device_type", "from", "os_type": "default"|"esr", "current": str|null,
                       "recommended": str|null, "versions": [str]}
    os supervisor-releases {"architecture", "releases": [{"id", "version", "known_issue"}]}
    os arch-compatible {"os_arch", "app_arch", "compatible": bool}
`line` is next/current/sunset/outdated for ESR versions and null otherwise; `current` is the
listed spelling of FROM, or null when FROM is not an available version. Errors exit 1 (usage
errors 2) and, with --json, print {"event": "error", "code", "message", "hint", "details"}.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from flasher.balena import versions
from flasher.balena.device_types import DeviceTypes
from flasher.balena.os_model import OsModel, OsTypeFilter
from flasher.cli.context import CliContext
from flasher.cli.output import human_bytes
from flasher.errors import EXIT_OK, CatalogError
from flasher.models import DeviceType, OsVersion

_KEYWORDS = ("latest", "recommended", "default")


def register(groups: dict[str, Any]) -> None:
    top = groups[""]
    os_group = groups["os"]

    parser = top.add_parser(
        "device-types",
        help="list the device types balenaOS supports",
        description="List device types: slug, name, CPU architecture and aliases.",
    )
    parser.set_defaults(handler=device_types)

    parser = os_group.add_parser(
        "versions",
        help="list the balenaOS versions of a device type",
        description="List balenaOS versions for a device type, newest first.",
    )
    parser.add_argument("device_type", metavar="DEVICE_TYPE")
    drafts = parser.add_mutually_exclusive_group()
    _draft_flag(drafts)
    drafts.add_argument(
        "--all",
        action="store_true",
        help="every release: drafts, invalidated and failed ones too",
    )
    _esr_flag(parser)
    parser.set_defaults(handler=os_versions)

    parser = os_group.add_parser(
        "latest",
        help="the newest balenaOS version matching a range",
        description="Print the newest available balenaOS version that satisfies RANGE.",
    )
    parser.add_argument("device_type", metavar="DEVICE_TYPE")
    parser.add_argument(
        "range",
        metavar="RANGE",
        nargs="?",
        default="latest",
        help="latest (default), recommended, default, an exact version or a semver range",
    )
    _esr_flag(parser)
    parser.set_defaults(handler=os_latest)

    parser = os_group.add_parser(
        "download-size",
        help="the download size of a balenaOS image",
        description="Print the API's download size estimate for a balenaOS image.",
    )
    parser.add_argument("device_type", metavar="DEVICE_TYPE")
    parser.add_argument(
        "--version", metavar="V", help="exact version (default: the one 'os download' picks)"
    )
    parser.set_defaults(handler=os_download_size)

    parser = os_group.add_parser(
        "update-type",
        help="how a device updates from one balenaOS version to another",
        description="Print the host OS update action (balenahup or takeover) from FROM to TO.",
    )
    parser.add_argument("device_type", metavar="DEVICE_TYPE")
    parser.add_argument("current", metavar="FROM")
    parser.add_argument("target", metavar="TO")
    parser.set_defaults(handler=os_update_type)

    parser = os_group.add_parser(
        "update-targets",
        help="the balenaOS versions a device can update to",
        description="List the balenaOS versions a device running FROM can update to.",
    )
    parser.add_argument("device_type", metavar="DEVICE_TYPE")
    parser.add_argument("current", metavar="FROM")
    _draft_flag(parser)
    _esr_flag(parser)
    parser.set_defaults(handler=os_update_targets)

    parser = os_group.add_parser(
        "supervisor-releases",
        help="the balena supervisor releases for a CPU architecture",
        description="List the balena supervisor releases for a CPU architecture, newest first.",
    )
    parser.add_argument("architecture", metavar="ARCH", help="e.g. aarch64, or a numeric id")
    parser.set_defaults(handler=os_supervisor_releases)

    parser = os_group.add_parser(
        "arch-compatible",
        help="whether an OS architecture runs containers of another",
        description="Say whether an OS built for OS_ARCH runs containers built for APP_ARCH.",
    )
    parser.add_argument("os_arch", metavar="OS_ARCH")
    parser.add_argument("app_arch", metavar="APP_ARCH")
    parser.set_defaults(handler=os_arch_compatible)


def _esr_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--esr", action="store_true", help="the ESR (extended support) line")


def _draft_flag(parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    parser.add_argument(
        "--include-draft", action="store_true", help="include draft (pre-release) versions"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, trailing blanks trimmed."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    return "\n".join(lines)


def _model(ctx: CliContext) -> OsModel:
    return OsModel(ctx.session())


# --- device-types -----------------------------------------------------------------------------


def _device_type_json(dt: DeviceType) -> dict[str, Any]:
    return {
        "slug": dt.slug,
        "name": dt.name,
        "arch": dt.arch,
        "aliases": list(dt.aliases),
        "is_private": dt.is_private,
        "installer_media": dt.flasher,
    }


def device_types(args: argparse.Namespace, ctx: CliContext) -> int:
    found = DeviceTypes(ctx.session()).list_all()
    rows = [
        (dt.slug, dt.name, dt.arch, ", ".join(dt.aliases), "installer" if dt.flasher else "")
        for dt in found
    ]
    ctx.out.result(
        {"device_types": [_device_type_json(dt) for dt in found]},
        table(("SLUG", "NAME", "ARCH", "ALIASES", "MEDIA"), rows),
    )
    return EXIT_OK


# --- os versions ------------------------------------------------------------------------------


def _version_json(v: OsVersion) -> dict[str, Any]:
    return {
        "version": v.raw_version,
        "os_type": v.os_type,
        "line": v.line,
        "variant": v.variant,
        "recommended": v.is_recommended,
        "known_issue": v.known_issue,
        "stripped_version": v.stripped_version,
        "based_on_version": v.based_on_version,
        "is_final": v.is_final,
        "invalidated": v.is_invalidated,
        "id": v.id,
    }


def _notes(v: OsVersion) -> str:
    notes = []
    if v.is_recommended:
        notes.append("recommended")
    if not v.is_final:
        notes.append("draft")
    if v.is_invalidated:
        notes.append("invalidated")
    if v.known_issue:
        notes.append(f"known issue: {v.known_issue}")
    return "; ".join(notes)


def os_versions(args: argparse.Namespace, ctx: CliContext) -> int:
    model = _model(ctx)
    slug = model.device_types.resolve_slug(args.device_type)
    os_type = "esr" if args.esr else "default"
    if args.all:
        listed = model.get_all_os_versions(slug)
    else:
        listed = model.get_available_os_versions(slug, include_draft=args.include_draft)
    found = [v for v in listed if v.os_type == os_type]
    rows = [(v.raw_version, v.line or "", v.variant or "", _notes(v)) for v in found]
    if found:
        text = table(("VERSION", "LINE", "VARIANT", "NOTES"), rows)
    else:
        text = f"No {'ESR ' if args.esr else ''}balenaOS versions for {slug}."
    ctx.out.result(
        {"device_type": slug, "os_type": os_type, "versions": [_version_json(v) for v in found]},
        text,
    )
    return EXIT_OK


def os_latest(args: argparse.Namespace, ctx: CliContext) -> int:
    model = _model(ctx)
    slug = model.device_types.resolve_slug(args.device_type)
    wanted: str = args.range
    os_type: OsTypeFilter = "esr" if args.esr else ("default" if wanted in _KEYWORDS else None)
    version = model.get_max_satisfying_version(slug, wanted, os_type)
    if version is None:
        line = {"esr": "ESR ", "default": "default-line "}.get(os_type or "", "")
        raise CatalogError(
            f"No {line}balenaOS version of {slug} matches '{wanted}'.",
            hint=f"List the versions with 'flasher os versions {slug}"
            f"{' --esr' if args.esr else ''}'.",
            device_type=slug,
            range=wanted,
        )
    ctx.out.result(
        {"device_type": slug, "range": wanted, "os_type": os_type, "version": version}, version
    )
    return EXIT_OK


def os_download_size(args: argparse.Namespace, ctx: CliContext) -> int:
    model = _model(ctx)
    slug = model.device_types.resolve_slug(args.device_type)
    version = args.version or model.get_max_satisfying_version(slug, "default", "default")
    if version is None:
        raise CatalogError(
            f"{slug} has no released balenaOS version.",
            hint="Name one with --version (see 'flasher os versions').",
            device_type=slug,
        )
    size_bytes = model.get_download_size(slug, version)
    ctx.out.result(
        {"device_type": slug, "version": version, "size_bytes": size_bytes},
        f"{slug} {version}: {human_bytes(size_bytes)} ({size_bytes} bytes)",
    )
    return EXIT_OK


def os_update_type(args: argparse.Namespace, ctx: CliContext) -> int:
    model = _model(ctx)
    slug = model.device_types.resolve_slug(args.device_type)
    update_type = model.get_os_update_type(slug, args.current, args.target)
    ctx.out.result(
        {"device_type": slug, "from": args.current, "to": args.target, "update_type": update_type},
        update_type,
    )
    return EXIT_OK


def os_update_targets(args: argparse.Namespace, ctx: CliContext) -> int:
    model = _model(ctx)
    slug = model.device_types.resolve_slug(args.device_type)
    # Stay on the line FROM is on, unless --esr asks to move to (or stay on) the ESR line.
    os_type: OsTypeFilter = "esr" if args.esr or versions.is_esr(args.current) else "default"
    targets = model.get_supported_os_update_versions(
        slug, args.current, os_type=os_type, include_draft=args.include_draft
    )
    if targets.current is None:
        lines = [f"From: {args.current} (not an available version of {slug})"]
    else:
        lines = [f"From: {targets.current}"]
    if targets.versions:
        lines.append(
            table(
                ("VERSION", "NOTES"),
                [(v, "recommended" if v == targets.recommended else "") for v in targets.versions],
            )
        )
    else:
        lines.append("No balenaOS version to update to.")
    ctx.out.result(
        {"device_type": slug, "from": args.current, "os_type": os_type, **targets.to_dict()},
        "\n".join(lines),
    )
    return EXIT_OK


# --- supervisors and architectures ------------------------------------------------------------


def os_supervisor_releases(args: argparse.Namespace, ctx: CliContext) -> int:
    arch: str = args.architecture
    rows = _model(ctx).get_supervisor_releases_for_cpu_architecture(
        int(arch) if arch.isdecimal() else arch
    )
    releases = [
        {
            "id": row.get("id"),
            "version": row.get("raw_version"),
            "known_issue": row.get("known_issue_list") or None,
        }
        for row in rows
    ]
    if releases:
        text = table(
            ("VERSION", "ID", "KNOWN ISSUE"),
            [(str(r["version"]), str(r["id"]), str(r["known_issue"] or "")) for r in releases],
        )
    else:
        text = f"No supervisor releases for the architecture '{arch}'."
    ctx.out.result({"architecture": arch, "releases": releases}, text)
    return EXIT_OK


def os_arch_compatible(args: argparse.Namespace, ctx: CliContext) -> int:
    compatible = OsModel.is_architecture_compatible_with(args.os_arch, args.app_arch)
    ctx.out.result(
        {"os_arch": args.os_arch, "app_arch": args.app_arch, "compatible": compatible},
        f"An OS for {args.os_arch} {'runs' if compatible else 'does not run'} "
        f"containers built for {args.app_arch}.",
    )
    return EXIT_OK
