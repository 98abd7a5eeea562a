"""The desktop app's state machine: what is chosen (source, settings, targets) and what is
running (catalog queries, opening an image, the flash job). Owns no widgets.

Pages call its methods and bind to its signals and item models. Every core call runs through the
Bridge on a worker thread; results and events come back as queued signals. Stale answers (the
user picked something else meanwhile) are dropped by generation counters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from PySide6.QtCore import QObject, Signal

from flasher.balena.os_model import OsModel
from flasher.balena.session import BalenaSession
from flasher.bench.policy import DrivePolicy
from flasher.drives.constraints import Problem
from flasher.drives.eject import eject, ejectable
from flasher.drives.monitor import DriveEvent
from flasher.error_codes import Severity
from flasher.errors import Cancelled
from flasher.events import CancelToken, Event, EventCallback
from flasher.gui.bench import BenchSetup
from flasher.gui.bridge import Bridge, Failure, Relay, Task
from flasher.gui.choices import ImageChoice, Selection
from flasher.gui.flashing import Outcome, apply_config_to_settings, flash_work
from flasher.gui.progress import FlashState, JobProgress, error_words
from flasher.gui.qtmodels import (
    DeviceTypeFilter,
    DeviceTypeModel,
    DriveFilter,
    DriveModel,
    VersionFilter,
    VersionModel,
    default_version,
    drive_title,
    visible_versions,
)
from flasher.image.inspection import ImageInfo, inspect_image
from flasher.models import DeviceConfig, DeviceType, Drive, OsVersion
from flasher.pipeline import FlashJob, FlashReport
from flasher.provider import ImageProvider, SessionFactory, SourceSpec
from flasher.settings import Settings
from flasher.writer.launchers import Launcher


class DriveWatch(Protocol):
    """The hotplug monitor as the controller uses it (flasher.drives.monitor.DriveMonitor)."""

    def start(self, callback: Callable[[DriveEvent], None]) -> None: ...

    def close(self) -> None: ...


@dataclass
class Services:
    """The outside world, built by app.py (tests build theirs from real parts)."""

    settings: Settings
    save_settings: Callable[[Settings], object]
    session_factory: SessionFactory
    provider: ImageProvider
    launcher: Launcher | None
    drive_watch: Callable[[], DriveWatch]
    sandbox: bool = False
    device_api_url: str | None = None  # written into config.json; None: balenaCloud
    inspect: Callable[[Path], ImageInfo] = inspect_image
    cache_dir: str | None = None  # its paths are left out of messages
    window_state_path: str | None = None  # where the window's size is remembered
    bench: BenchSetup = field(default_factory=lambda: BenchSetup(DrivePolicy()))
    has_login: bool = False  # a balena login is saved (the API can make provisioning keys)


class FlashController(QObject):
    catalog_busy = Signal(bool)
    catalog_failed = Signal(object)  # Failure
    versions_loaded = Signal()
    download_size_known = Signal(object)  # int | None
    image_busy = Signal(object)  # Event while opening a file or URL
    image_ready = Signal(object)  # ImageChoice
    image_failed = Signal(object)  # Failure
    flash_started = Signal()
    target_changed = Signal(str)
    job_changed = Signal()
    flash_finished = Signal()
    cards_ejected = Signal(object)  # list of paths powered off after their verification

    def __init__(self, services: Services, bridge: Bridge, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.bridge = bridge
        self.device_types = DeviceTypeModel(self)
        self.device_type_filter = DeviceTypeFilter(self)
        self.device_type_filter.setSourceModel(self.device_types)
        self.versions = VersionModel(self)
        self.drives = DriveModel(self)
        self.drive_filter = DriveFilter(self)
        self.drive_filter.setSourceModel(self.drives)
        self.selection: Selection | None = None
        self.config: DeviceConfig | None = None
        self.verify = services.settings.verify
        self.write_all = False
        self.eject_when_verified = True
        self.ejected: list[str] = []
        self.job: JobProgress | None = None
        self.report: FlashReport | None = None
        self.failure: Failure | None = None
        self._all_versions: list[OsVersion] = []
        self._version_filter = VersionFilter(esr=services.settings.os_line == "esr")
        self._generation = 0
        self._versions_slug: str | None = None
        self._versions_task: Task | None = None
        self._image_task: Task | None = None
        self._flash_task: Task | None = None
        self._catalog: OsModel | None = None
        self._session: BalenaSession | None = None
        self._catalog_lock = threading.Lock()
        self._watch: DriveWatch | None = None
        self._relay = Relay(self)
        self._relay.connect_to(self._on_drive_event)

    # --- catalog ------------------------------------------------------------------------------

    def _with_catalog(
        self, call: Callable[[OsModel], Any]
    ) -> Callable[[EventCallback, CancelToken], Any]:
        def work(_emit: EventCallback, _cancel: CancelToken) -> Any:
            # One HTTP session, used by one worker at a time.
            with self._catalog_lock:
                if self._catalog is None:
                    self._session = self.services.session_factory()
                    self._catalog = OsModel(self._session)
                return call(self._catalog)

        return work

    def load_device_types(self) -> None:
        self.catalog_busy.emit(True)
        task = self.bridge.run(
            "device-types",
            self._with_catalog(lambda m: m.device_types.list_all(supported_only=True)),
        )
        task.done.connect(self._device_types_loaded)
        task.failed.connect(self._catalog_failed)

    def _device_types_loaded(self, items: list[DeviceType]) -> None:
        self.device_types.set_device_types(items)
        self.catalog_busy.emit(False)

    def _catalog_failed(self, failure: Failure) -> None:
        self.catalog_busy.emit(False)
        self.catalog_failed.emit(failure)

    def choose_device_type(self, slug: str) -> None:
        """Load `slug`'s versions. While typing in the search moves the selection quickly, only
        one query runs at a time and the latest choice wins."""
        if slug == self._versions_slug:
            return
        self._generation += 1
        self._versions_slug = slug
        self._all_versions = []
        self._show_versions()
        if self._versions_task is None:
            self._load_versions()

    def clear_device_type(self) -> None:
        """No device type chosen (a search without matches): no versions either."""
        self._generation += 1
        self._versions_slug = None
        self._all_versions = []
        self._show_versions()

    def reload_versions(self, slug: str) -> None:
        """Ask again for `slug`'s versions (after a failed query)."""
        self._versions_slug = None
        self.choose_device_type(slug)

    def _load_versions(self) -> None:
        slug, generation = self._versions_slug, self._generation
        if slug is None:
            return
        self.catalog_busy.emit(True)
        task = self._versions_task = self.bridge.run(
            "versions",
            self._with_catalog(lambda m: m.get_available_os_versions(slug, include_draft=True)),
        )
        task.done.connect(lambda items: self._versions_loaded(generation, items))
        task.failed.connect(lambda failure: self._versions_failed(generation, failure))
        task.finished.connect(lambda: self._versions_task_finished(generation))

    def _versions_loaded(self, generation: int, items: list[OsVersion]) -> None:
        if generation == self._generation:
            self._all_versions = items
            self._show_versions()

    def _versions_failed(self, generation: int, failure: Failure) -> None:
        if generation == self._generation:
            self.catalog_failed.emit(failure)

    def _versions_task_finished(self, generation: int) -> None:
        self._versions_task = None
        self.catalog_busy.emit(False)
        if generation != self._generation:
            self._load_versions()

    def set_version_filter(self, which: VersionFilter) -> None:
        self._version_filter = which
        self._show_versions()

    @property
    def version_filter(self) -> VersionFilter:
        return self._version_filter

    def _show_versions(self) -> None:
        self.versions.set_versions(visible_versions(self._all_versions, self._version_filter))
        self.versions_loaded.emit()

    def preferred_version(self) -> OsVersion | None:
        remembered = self.services.settings.os_version
        for version in self.versions.versions:
            if version.raw_version == remembered:
                return version
        return default_version(self.versions.versions)

    def fetch_download_size(self, slug: str, version: str) -> None:
        generation = self._generation
        task = self.bridge.run(
            "download-size", self._with_catalog(lambda m: m.get_download_size(slug, version))
        )
        task.done.connect(lambda size: self._download_size(generation, size, slug, version))
        # An unknown size is not worth an error: the label just says so.
        task.failed.connect(lambda _failure: self._download_size(generation, None))

    def _download_size(
        self, generation: int, size: int | None, slug: str = "", version: str = ""
    ) -> None:
        if generation == self._generation:
            self.download_size_known.emit(size)
        # The size may come after the user moved on: the drive list learns it then.
        chosen = self.selection
        if (
            size
            and chosen is not None
            and chosen.image_size_bytes is None
            and (chosen.spec.device_type, chosen.spec.version) == (slug, version)
        ):
            self.set_selection(replace(chosen, image_size_bytes=size))

    # --- local files and URLs -----------------------------------------------------------------

    def open_image(self, spec: SourceSpec) -> None:
        """Get the raw image (unpacked once into the cache) and inspect it, on a worker."""
        self.cancel_image()
        provider, inspect = self.services.provider, self.services.inspect

        def work(emit: EventCallback, cancel: CancelToken) -> ImageChoice:
            resolved = provider.obtain(spec, on_event=emit, cancel=cancel)
            info = inspect(resolved.raw_path)
            return ImageChoice(spec, str(resolved.raw_path), info.size_bytes, info)

        task = self._image_task = self.bridge.run("open-image", work)
        task.core_event.connect(self.image_busy)
        task.done.connect(lambda choice: self._image_done(task, choice))
        task.failed.connect(lambda failure: self._image_done(task, None, failure))

    def _image_done(
        self, task: Task, choice: ImageChoice | None, failure: Failure | None = None
    ) -> None:
        if task is not self._image_task:
            return
        self._image_task = None
        if choice is not None:
            self.image_ready.emit(choice)
        elif failure is not None and not isinstance(failure.error, Cancelled):
            self.image_failed.emit(failure)

    @property
    def opening_image(self) -> bool:
        return self._image_task is not None

    def cancel_image(self) -> None:
        if self._image_task is not None:
            self._image_task.cancel()
            self._image_task = None

    # --- the plan -----------------------------------------------------------------------------

    def set_selection(self, selection: Selection | None) -> None:
        self.selection = selection
        if selection is None:
            self.drives.set_image(None, None)
        else:
            self.drives.set_image(selection.image_size_bytes, selection.source_path)

    def set_config(self, config: DeviceConfig | None) -> None:
        self.config = config

    # --- drives -------------------------------------------------------------------------------

    def start_drive_watch(self) -> None:
        if self._watch is None:
            self._watch = self.services.drive_watch()
            self._watch.start(self._relay)

    def stop_drive_watch(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def _on_drive_event(self, event: object) -> None:
        if isinstance(event, DriveEvent):
            self.drives.apply(event)

    def selected_drives(self) -> list[Drive]:
        return [row.drive for row in self.drives.selected]

    def selected_warnings(self) -> list[Problem]:
        return [
            p
            for row in self.drives.selected
            for p in row.problems
            if p.severity is Severity.WARNING
        ]

    # --- flashing -----------------------------------------------------------------------------

    @property
    def flashing(self) -> bool:
        return self._flash_task is not None

    def start_flash(self) -> None:
        """Flash the selection to the checked drives (the confirmation was already given)."""
        if self.selection is None or self._flash_task is not None:
            return
        drives = self.selected_drives()
        if not drives:
            return
        self.ejected = []
        self.job = JobProgress.start([(d.path, drive_title(d), d.is_file) for d in drives])
        self.report = None
        self.failure = None
        self.remember_choices()
        self._run(drives)

    def retry_failed(self) -> None:
        """Flash again to the targets that failed; download and preparation come from cache."""
        if self.job is not None:
            self.retry(self.job.failed_targets)

    def retry(self, paths: Sequence[str]) -> None:
        """Flash again to those of `paths` that failed; the others keep their results."""
        if self.job is None or self._flash_task is not None or self.selection is None:
            return
        failed = set(self.job.failed_targets)
        by_path = {d.path: d for d in self.drives.drives}
        drives = [by_path[p] for p in paths if p in failed and p in by_path]
        if not drives:
            return
        self.job.retry([d.path for d in drives])
        self.failure = None
        self._run(drives)

    def _run(self, drives: Sequence[Drive]) -> None:
        assert self.selection is not None and self.job is not None
        job = FlashJob(
            source=self.selection.spec,
            targets=tuple(d.path for d in drives),
            config=self.config,
            verify=self.verify,
            write_all=self.write_all,
            # An internal disk is selectable only after its name was typed: its own confirmation.
            allow_internal=any(d.internal for d in drives),
        )
        # The warnings the user saw in the confirmation; anything new (a card mounted since)
        # is refused rather than accepted silently.
        accepted = frozenset((p.target, p.code) for p in self.selected_warnings())
        work = flash_work(
            job,
            list(drives),
            lambda warnings: all((w.target, w.code) in accepted for w in warnings),
            provider=self.services.provider,
            launcher=self.services.launcher,
            session_factory=self.services.session_factory,
        )
        task = self._flash_task = self.bridge.run("flash", work)
        task.core_event.connect(self._flash_event)
        task.done.connect(self._flash_done)
        task.failed.connect(self._flash_failed)
        self.flash_started.emit()
        self.job_changed.emit()

    def _flash_event(self, event: Event) -> None:
        if self.job is None:
            return
        changed = self.job.apply(event)
        if changed is None:
            self.job_changed.emit()
        else:
            self.target_changed.emit(changed)

    def _flash_done(self, outcome: Outcome) -> None:
        assert self.job is not None and self._flash_task is not None
        cancelled = self._flash_task.cancel_token.cancelled
        self._flash_task = None
        self.report = outcome.report
        self.job.finish(outcome.results, cancelled=cancelled)
        self._finished()
        if self.eject_when_verified:
            drives = {d.path: d for d in self.drives.drives}
            self._eject(ejectable(drives, outcome.results))

    def _eject(self, paths: list[str]) -> None:
        """Power off the verified cards on a worker; the page then says they can be removed."""
        if not paths:
            return
        task = self.bridge.run("eject", lambda _emit, _cancel: eject(paths))
        task.done.connect(self._ejected)

    def _ejected(self, paths: list[str]) -> None:
        self.ejected = [*self.ejected, *paths]
        if paths:
            self.cards_ejected.emit(paths)

    def _flash_failed(self, failure: Failure) -> None:
        assert self.job is not None and self._flash_task is not None
        cancelled = self._flash_task.cancel_token.cancelled
        self._flash_task = None
        self.failure = failure
        self.job.fail(failure.error, cancelled=cancelled)
        self._finished()

    def _finished(self) -> None:
        assert self.job is not None
        for path in self.job.targets:
            self.target_changed.emit(path)
        self.job_changed.emit()
        self.flash_finished.emit()

    def cancel_flash(self) -> None:
        if self._flash_task is not None:
            self._flash_task.cancel()

    def error_words(
        self, error: BaseException | None, *, from_url: bool = False
    ) -> tuple[str, str | None]:
        """An error's headline and next step in desktop words (no cache paths)."""
        return error_words(error, from_url=from_url, cache_dir=self.services.cache_dir)

    @property
    def state(self) -> FlashState:
        return self.job.state if self.job is not None else FlashState.IDLE

    # --- settings -----------------------------------------------------------------------------

    def remember_choices(self) -> None:
        """Save the last choices (secrets only if the user asked to remember them)."""
        settings = self.services.settings
        selection, config = self.selection, self.config
        if selection is not None and selection.spec.device_type:
            settings.device_type = selection.spec.device_type
            settings.os_version = selection.spec.version
        if selection is not None and selection.spec.path:
            settings.last_image_path = selection.spec.path
        settings.os_line = "esr" if self._version_filter.esr else "default"
        settings.verify = self.verify
        if config is not None:
            apply_config_to_settings(settings, config)
        self.services.save_settings(settings)

    def shutdown(self) -> None:
        """Stop everything running: workers, the drive monitor (before the window goes)."""
        self.cancel_image()
        self.cancel_flash()
        self.stop_drive_watch()
        self.bridge.shutdown()
        # A worker still waiting on the API keeps the session; the process is ending anyway.
        if self._catalog_lock.acquire(timeout=1.0):
            try:
                if self._session is not None:
                    self._session.close()
                    self._session, self._catalog = None, None
            finally:
                self._catalog_lock.release()
