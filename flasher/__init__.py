"""Flasher: provision balenaOS devices. The public Python API, loaded lazily.

`from flasher import prepare, write, DeviceConfig` imports only the module that defines each
name, on first use (PEP 562): importing `flasher` alone loads nothing, so the root writer helper
(flasher.writer) never pulls in requests, the pipeline or Qt through it. `_EXPORTS` is the one
table of public names, grouped by area; each maps a name to the module that defines it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # Jobs: prepare once, write per target or card; run_flash composes the two.
    "FlashJob": "flasher.pipeline",
    "FlashReport": "flasher.pipeline",
    "run_flash": "flasher.pipeline",
    "prepare": "flasher.pipeline.prepare",
    "PreparedJob": "flasher.pipeline.prepare",
    "CardImage": "flasher.pipeline.prepare",
    "write": "flasher.pipeline.write",
    "WriteOutcome": "flasher.pipeline.write",
    "resolve_target": "flasher.pipeline.write",
    "accept_warnings": "flasher.pipeline.write",
    "TargetResult": "flasher.writer.job",
    "BenchJob": "flasher.bench.image",
    "Station": "flasher.bench.station",
    # Images: what to flash, where it comes from, and the cache it is kept in.
    "SourceSpec": "flasher.provider",
    "ImageProvider": "flasher.provider",
    "ImageCache": "flasher.cache",
    "prepare_image": "flasher.image.configure",
    "read_image_identity": "flasher.image.inspection",
    # Device configuration.
    "DeviceConfig": "flasher.models",
    "NetworkSettings": "flasher.models",
    "NetworkKind": "flasher.models",
    "StaticIPv4": "flasher.models",
    "Keyfile": "flasher.models",
    "Secret": "flasher.models",
    # Drives.
    "Drive": "flasher.models",
    "list_drives": "flasher.drives.discovery",
    "find_drive": "flasher.drives.discovery",
    "DriveMonitor": "flasher.drives.monitor",
    "Problem": "flasher.drives.constraints",
    # Events and cancellation.
    "CancelToken": "flasher.events",
    "Event": "flasher.events",
    "Phase": "flasher.events",
    "PhaseChanged": "flasher.events",
    "Progress": "flasher.events",
    "Log": "flasher.events",
    # Errors.
    "FlasherError": "flasher.errors",
    "ConfigError": "flasher.errors",
    "CatalogError": "flasher.errors",
    "ApiError": "flasher.errors",
    "AuthError": "flasher.errors",
    "DownloadError": "flasher.errors",
    "CacheError": "flasher.errors",
    "ImageError": "flasher.errors",
    "DriveError": "flasher.errors",
    "DriveRejected": "flasher.errors",
    "DriveGone": "flasher.errors",
    "WriterError": "flasher.errors",
    "WriteFailed": "flasher.errors",
    "VerificationFailed": "flasher.errors",
    "Cancelled": "flasher.errors",
    # The balena API, and the built-in offline sandbox that serves it on 127.0.0.1.
    "BalenaSession": "flasher.balena.session",
    "OsModel": "flasher.balena.os_model",
    "SandboxServer": "flasher.sandbox.server",
    # The device side: the Supervisor API, directly or through the balena API's proxy.
    "SupervisorClient": "flasher.supervisor.client",
    "DirectTransport": "flasher.supervisor.transport",
    "ProxyTransport": "flasher.supervisor.transport",
    "ProxyTarget": "flasher.supervisor.transport",
    "wait_for_device": "flasher.supervisor.wait",
    "BootCheck": "flasher.supervisor.wait",
    "DeviceError": "flasher.supervisor.errors",
    "DeviceLocked": "flasher.supervisor.errors",
    "DeviceUnauthorized": "flasher.supervisor.errors",
    "DeviceOffline": "flasher.supervisor.errors",
    "DeviceUnreachable": "flasher.supervisor.errors",
    "DeviceMismatch": "flasher.supervisor.errors",
    # Release updates: what moving a fleet between releases costs; deltas built ahead.
    "get_update_info": "flasher.release_update",
    "prepare_update": "flasher.release_update",
    "UpdateInfo": "flasher.release_update",
    "UpdateStatus": "flasher.release_update",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from flasher.balena.os_model import OsModel
    from flasher.balena.session import BalenaSession
    from flasher.bench.image import BenchJob
    from flasher.bench.station import Station
    from flasher.cache import ImageCache
    from flasher.drives.constraints import Problem
    from flasher.drives.discovery import find_drive, list_drives
    from flasher.drives.monitor import DriveMonitor
    from flasher.errors import (
        ApiError,
        AuthError,
        CacheError,
        Cancelled,
        CatalogError,
        ConfigError,
        DownloadError,
        DriveError,
        DriveGone,
        DriveRejected,
        FlasherError,
        ImageError,
        VerificationFailed,
        WriteFailed,
        WriterError,
    )
    from flasher.events import CancelToken, Event, Log, Phase, PhaseChanged, Progress
    from flasher.image.configure import prepare_image
    from flasher.image.inspection import read_image_identity
    from flasher.models import (
        DeviceConfig,
        Drive,
        Keyfile,
        NetworkKind,
        NetworkSettings,
        Secret,
        StaticIPv4,
    )
    from flasher.pipeline import FlashJob, FlashReport, run_flash
    from flasher.pipeline.prepare import CardImage, PreparedJob, prepare
    from flasher.pipeline.write import WriteOutcome, accept_warnings, resolve_target, write
    from flasher.provider import ImageProvider, SourceSpec
    from flasher.release_update import UpdateInfo, UpdateStatus, get_update_info, prepare_update
    from flasher.sandbox.server import SandboxServer
    from flasher.supervisor.client import SupervisorClient
    from flasher.supervisor.errors import (
        DeviceError,
        DeviceLocked,
        DeviceMismatch,
        DeviceOffline,
        DeviceUnauthorized,
        DeviceUnreachable,
    )
    from flasher.supervisor.transport import DirectTransport, ProxyTarget, ProxyTransport
    from flasher.supervisor.wait import BootCheck, wait_for_device
    from flasher.writer.job import TargetResult


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flasher' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
