"""What the controller hands the core and keeps from it, without Qt: each drive checked on its
own before a flash (so one that cannot be written fails alone), the flash's outcome, and the
choices saved as settings (secrets only when the user asked).

Imports the core's drive rules, models, pipeline report, settings and writer result values only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flasher.drives.constraints import Severity, check_drive, rejection, source_device
from flasher.gui.wording import word_problem
from flasher.models import DeviceConfig, Drive
from flasher.pipeline import FlashReport
from flasher.settings import Settings
from flasher.writer.job import TargetResult


@dataclass(frozen=True)
class Outcome:
    """A flash's end: the job's report (None when no drive could be written) and the drives
    refused by their own checks."""

    report: FlashReport | None
    refused: tuple[TargetResult, ...]

    @property
    def results(self) -> tuple[TargetResult, ...]:
        written = self.report.results if self.report is not None else ()
        return (*written, *self.refused)


def refuse_unusable(
    drives: Sequence[Drive], image_size_bytes: int, source_path: str
) -> tuple[list[TargetResult], list[Drive]]:
    """Check each drive alone: a failed result for each one with a blocking problem (in
    desktop words), and the drives that may be written."""
    refused: list[TargetResult] = []
    usable: list[Drive] = []
    source_dev = source_device(source_path)
    for drive in drives:
        problems = [
            word_problem(p, drive, image_size_bytes)
            for p in check_drive(
                drive, image_size_bytes, source_dev=source_dev, source_path=source_path
            )
        ]
        errors = [p for p in problems if p.severity is Severity.ERROR]
        if errors:
            refused.append(TargetResult(drive.path, False, error=rejection(errors)))
        else:
            usable.append(drive)
    return refused, usable


def apply_config_to_settings(settings: Settings, config: DeviceConfig) -> None:
    network = config.network
    settings.network = network.kind.value
    settings.wifi_ssid = network.wifi_ssid
    settings.wifi_hidden = network.hidden
    settings.static_ip = network.ipv4 is not None
    if network.ipv4 is not None:
        settings.ip_address = network.ipv4.address
        settings.ip_netmask = network.ipv4.netmask
        settings.ip_gateway = network.ipv4.gateway
        settings.dns_servers = list(network.ipv4.dns)
    settings.poll_interval_min = config.poll_interval_min
    settings.hostname = config.hostname
    settings.fleet_id = config.fleet_id
    settings.development_mode = config.development_mode
    if settings.remember_secrets:
        settings.wifi_key = network.wifi_key.reveal() if network.wifi_key else None
        settings.provisioning_key = (
            config.provisioning_key.reveal() if config.provisioning_key else None
        )
    else:
        settings.wifi_key = settings.provisioning_key = None
