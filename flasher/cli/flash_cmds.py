"""`flasher flash`: a configured, verified card (or many) from a file, a URL or a device type.

flash [SOURCE] --target T [--target T …] [--device-type T [--version V]] [os configure options]
      [--image-type raw|flasher] [--no-verify] [--write-all] [--bmap FILE] [--sha256 HEX]
      [--allow-internal-disk] [--yes] [--json]

SOURCE is an image file (.img .zip .gz .xz .zst .bz2) or an http(s) URL; without it
`--device-type` (and `--version`, default the latest production release) downloads the image
from the balena API (or the sandbox with --sandbox). The image is configured when the source is a
device type or any configuration option is given; otherwise it is flashed as it is. Targets are
block devices (written by the privileged helper) or regular files (written by this process; a
missing file is created). Erasing a drive needs --yes, or a "yes" typed on the terminal.

--json prints JSON lines: {"event": "phase"|"progress"|"log", …} while working, then one
{"event": "target_result", "target", "ok", "verified", "bytes_written", "seconds", "mb_per_s",
"sha256", "scrub_scanned_bytes", "scrub_zeroed_blocks", "error"} per target and a final
{"event": "summary", "ok", "image", "size_bytes", "mapped_bytes", "scrub_bytes" (journal bytes
read back instead of written), "image_sha256" (null for a local file without --sha256),
"config_sha256", "device_type", "os_version", "seconds", "targets", "source_integrity" ("none"
or the check the source format carries: crc32, crc64, sha256, xxhash64), "sha256_matched"
(null, "image" or "source"), "bmap_checked"};
errors as {"event": "error", "code", "message", "hint", "details"}.
Exit codes: 0 every target verified (or written, with --no-verify), 1 a target failed,
2 bad usage or settings, 3 a verification failed, 4 a target was rejected, 130 cancelled.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from flasher.cli.config_opts import (
    add_device_config_arguments,
    config_requested,
    device_config_for_image,
    precheck_device_config,
)
from flasher.cli.context import CliContext
from flasher.cli.entry import code_loaded
from flasher.cli.hints import cli_error_dict, cli_hint
from flasher.cli.integrity_opts import integrity_text
from flasher.cli.job_opts import add_source_argument, add_write_arguments, source_spec
from flasher.cli.output import human_bytes, human_seconds, printable
from flasher.error_codes import Action, ProblemCode
from flasher.errors import (
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_VERIFY,
    Cancelled,
    DriveRejected,
    FlasherError,
    VerificationFailed,
)
from flasher.events import CancelToken, Event

if TYPE_CHECKING:  # the flash machinery loads when the command runs, not for --help
    from flasher.drives.constraints import Problem
    from flasher.drives.early import EarlyDrives
    from flasher.image.earlymap import EarlyMap
    from flasher.pipeline import ConfirmWarnings, FlashJob, FlashReport
    from flasher.provider import ImageProvider, SourceSpec
    from flasher.writer.client import TargetResult
    from flasher.writer.launchers import StartedHelper
    from flasher.writer.shared import SharedHelper


def register(groups: dict[str, Any]) -> None:
    parser = groups[""].add_parser(
        "flash",
        help="write a configured image to cards or files and verify them",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
    )
    add_source_argument(parser)
    parser.add_argument(
        "--target",
        "-t",
        dest="targets",
        action="append",
        default=[],
        metavar="T",
        required=True,
        help="a drive (/dev/sdX, /dev/mmcblkN) or a file; repeat for more",
    )
    add_device_config_arguments(parser)
    add_write_arguments(parser)
    parser.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="erase the drives and accept warnings without asking (not internal disks)",
    )
    parser.add_argument(
        "--allow-internal-disk",
        action="store_true",
        help="also write internal (non-removable) disks named with --target; --yes never does",
    )
    # flash loads its machinery when it runs: it resumes the collector itself (`_run`).
    parser.set_defaults(handler=flash_command, resumes_collector=True)


def _confirm(args: argparse.Namespace, ctx: CliContext) -> ConfirmWarnings:
    def ask(warnings: Sequence[Problem]) -> bool:
        if args.yes:
            return True
        if ctx.out.json_mode or not sys.stdin.isatty():
            return False
        for w in warnings:
            print(f"warning: {printable(w.message)}", file=sys.stderr)
        answer = input("Continue anyway? Type 'yes': ")
        return answer.strip().lower() == "yes"

    return ask


def _is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(os.path.realpath(path)).st_mode)
    except OSError:
        return False


def _erase_consent(args: argparse.Namespace, ctx: CliContext, devices: Sequence[str]) -> None:
    """Block devices (`devices`, the targets that are one) are erased only after --yes or a
    typed "yes", however they are spelled (a symlink to a disk too). A device path that is not
    a block device is refused later."""
    if not devices or args.yes:
        return
    names = ", ".join(devices)
    ctx.require_typed_yes(
        f"Flashing erases {names}; confirmation is required.",
        f"Everything on {names} will be erased. Type 'yes' to go on: ",
        "Nothing was written.",
    )


def _early_helper(devices: Sequence[str]) -> StartedHelper | None:
    """As root, the writer helper for the drives (`devices`), started now: its interpreter
    starts while this one loads the rest of the flash (which greets it: `_share_helper`). As a
    user it starts when the drives are written: pkexec asks then, once the image is known.
    Loads the launchers alone; a helper that cannot start is started again, and reported, by
    the first job."""
    if os.geteuid() != 0 or not devices:
        return None
    from flasher.writer.launchers import DirectLauncher, start_helper

    try:
        return start_helper(DirectLauncher())
    except (FlasherError, OSError):
        return None


def _share_helper(started: StartedHelper | None) -> SharedHelper | None:
    """The helper started ahead, for the flash's jobs, greeted on a thread of its own."""
    if started is None:
        return None
    from flasher.writer.shared import SharedHelper

    helper = SharedHelper(running=started)
    helper.start_soon()
    return helper


def _early_map(args: argparse.Namespace) -> EarlyMap | None:
    """A local file's allocation map, started now: the image's disk reads it while the rest
    of the flash loads (used only if it is the raw image the flash opens, unchanged)."""
    if not args.source or args.write_all or (args.bmap and args.sha256):
        return None  # nothing to map, or a .bmap that the image's SHA-256 makes unneeded
    from flasher.image.earlymap import EarlyMap

    return EarlyMap(args.source, bmap_path=args.bmap)


def _early_drives(devices: Sequence[str]) -> EarlyDrives | None:
    """The drives (`devices`) looked up from now, while the rest of the flash loads."""
    if not devices:
        return None
    from flasher.drives.early import EarlyDrives

    return EarlyDrives(devices)


@dataclass(frozen=True)
class _Early:
    """What `flash` starts before the rest of it loads."""

    helper: SharedHelper | None
    map: EarlyMap | None
    drives: EarlyDrives | None


def flash_command(args: argparse.Namespace, ctx: CliContext) -> int:
    if not args.source and not args.device_type:
        raise FlasherError(
            "Name an image to flash.", hint="Give an image file or URL, or --device-type SLUG."
        )
    configure = not args.source or config_requested(args)
    if configure:
        precheck_device_config(args, version_from_catalog=True)
    devices = [t for t in args.targets if _is_block_device(t)]
    _erase_consent(args, ctx, devices)
    early_map = _early_map(args)  # the longest: its disk reads start first
    started = _early_helper(devices)
    helper = None
    try:
        drives = _early_drives(devices)
        helper = _share_helper(started)
        early = _Early(helper, early_map, drives)
        return _flash(args, ctx, source_spec(args), configure, early)
    finally:
        if helper is not None:
            helper.close()
        elif started is not None:  # not handed over
            from flasher.writer.launchers import end_started

            end_started(started)


def _flash(
    args: argparse.Namespace,
    ctx: CliContext,
    source: SourceSpec,
    configure: bool,
    early: _Early,
) -> int:
    from flasher.cache import ImageCache
    from flasher.pipeline import FlashJob
    from flasher.provider import ImageProvider

    job = FlashJob(
        source=source,
        targets=tuple(args.targets),
        config_from_image=(
            partial(device_config_for_image, args, ctx, version_from_catalog=True)
            if configure
            else None
        ),
        verify=not args.no_verify,
        write_all=args.write_all,
        bmap_path=args.bmap,
        expected_sha256=args.sha256,
        allow_internal=args.allow_internal_disk,
    )
    session_factory = ctx.session if (source.device_type or ctx.args.sandbox) else None
    provider = ImageProvider(ImageCache(), session_factory, origin=ctx.cache_origin)
    try:
        report = _run(job, provider, args, ctx, early)
    except DriveRejected as err:
        if any(p.code is ProblemCode.INTERNAL for p in err.problems):
            err.action = Action.ALLOW_INTERNAL_DISK
        raise
    return _report(report, args, ctx)


def _run(
    job: FlashJob,
    provider: ImageProvider,
    args: argparse.Namespace,
    ctx: CliContext,
    early: _Early,
) -> FlashReport:
    """Run the job on a worker thread so Ctrl-C cancels it cleanly (cards left unbootable)."""
    from flasher.cli.progress import MultiBar
    from flasher.pipeline import run_flash

    cancel = CancelToken()
    bars = MultiBar(sys.stderr) if ctx.out.tty else None

    def on_event(ev: Event) -> None:
        if bars is not None:
            bars.handle(ev)
        else:
            ctx.out.event(ev)

    box: dict[str, Any] = {}
    finished = threading.Event()

    def work() -> None:
        try:
            box["report"] = run_flash(
                job,
                provider,
                on_event=on_event,
                cancel=cancel,
                confirm=_confirm(args, ctx),
                launcher=early.helper,
                early_map=early.map,
                early_drives=early.drives,
            )
        except BaseException as err:  # re-raised on the main thread
            box["error"] = err
        finally:
            finished.set()

    code_loaded()  # the flash's code is in (see flasher.cli.entry)
    threading.Thread(target=work, name="flasher-flash", daemon=True).start()
    # Wait on an Event, not Thread.join: a Ctrl-C that interrupts join() can make the thread
    # look finished. After Ctrl-C keep waiting: the writer zeroes the cards' first MiB first.
    while not finished.is_set():
        try:
            finished.wait(0.2)
        except KeyboardInterrupt:
            cancel.cancel()
    if bars is not None:
        bars.finish()
    if "error" in box:
        raise box["error"]
    report: FlashReport = box["report"]
    return report


def _result_dict(r: TargetResult) -> dict[str, Any]:
    rate = r.bytes_written / r.seconds / 1e6 if r.seconds > 0 else None
    return {
        "target": r.target,
        "ok": r.ok,
        "verified": r.verified,
        "bytes_written": r.bytes_written,
        "seconds": round(r.seconds, 3),
        "mb_per_s": round(rate, 1) if rate is not None else None,
        "sha256": r.sha256,
        # The journal areas read back instead of written, and the stale blocks zeroed there.
        "scrub_scanned_bytes": r.scanned_bytes,
        "scrub_zeroed_blocks": r.zeroed_blocks,
        "error": cli_error_dict(r.error) if r.error is not None else None,
    }


def _exit_code(results: Sequence[TargetResult]) -> int:
    if all(r.ok for r in results):
        return EXIT_OK
    errors = [r.error for r in results if r.error is not None]
    if errors and all(isinstance(e, Cancelled) for e in errors):
        return EXIT_CANCELLED
    if any(isinstance(e, VerificationFailed) for e in errors):
        return EXIT_VERIFY
    return EXIT_ERROR


def _report(report: FlashReport, args: argparse.Namespace, ctx: CliContext) -> int:
    rows = [_result_dict(r) for r in report.results]
    summary = {
        "ok": report.ok,
        "image": report.image_path,
        "size_bytes": report.size_bytes,
        "mapped_bytes": report.mapped_bytes,
        "scrub_bytes": report.scrub_bytes,
        "image_sha256": report.image_sha256,
        "config_sha256": report.config_sha256,
        "device_type": report.device_type,
        "os_version": report.os_version,
        "seconds": round(report.seconds, 3),
        "targets": len(rows),
        **report.integrity.to_dict(),
    }
    if ctx.out.json_mode:
        for row in rows:
            ctx.out.json_event("target_result", **row)
        ctx.out.json_event("summary", **summary)
        return _exit_code(report.results)
    lines = [
        f"{report.device_type or 'image'} {report.os_version or ''}".rstrip()
        + f": {human_bytes(report.size_bytes)} image, {human_bytes(report.mapped_bytes)} "
        f"with data ({100 * report.mapped_bytes / max(report.size_bytes, 1):.0f}%)",
    ]
    if report.image_sha256:
        lines.append(f"  source sha256 {report.image_sha256}")
    if report.config_sha256:
        lines.append(f"  config.json sha256 {report.config_sha256}")
    lines.append(f"  source integrity {integrity_text(report.integrity)}")
    for r, row in zip(report.results, rows, strict=True):
        if r.ok:
            state = "verified" if r.verified else "written (not verified)"
            rate = f", {row['mb_per_s']} MB/s" if row["mb_per_s"] is not None else ""
            lines.append(
                f"  {r.target}: {state}, {human_bytes(r.bytes_written)} in "
                f"{human_seconds(r.seconds)}{rate}"
            )
        else:
            message = r.error.message if r.error is not None else "failed"
            lines.append(f"  {r.target}: FAILED: {message}")
            hint = cli_hint(r.error) if r.error is not None else None
            if hint:
                lines.append(f"    hint: {hint}")
    ctx.out.result(summary, "\n".join(lines))
    return _exit_code(report.results)
