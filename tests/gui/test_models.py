"""Item models and the progress rules, without a window: search, version filters, the drive
list under hotplug events, and what the Progress page says."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from flasher.drives.monitor import DriveAction, DriveEvent
from flasher.errors import Cancelled, WriteFailed
from flasher.events import Log, Phase, PhaseChanged, Progress
from flasher.gui.progress import (
    FlashState,
    JobProgress,
    TargetStatus,
    human_bytes,
    human_duration,
    status_line,
)
from flasher.gui.qtmodels import (
    DeviceTypeFilter,
    DeviceTypeModel,
    DriveFilter,
    DriveModel,
    VersionFilter,
    default_version,
    visible_versions,
)
from flasher.models import DeviceType, Drive, OsVersion
from flasher.writer.client import TargetResult

TYPES = [
    DeviceType("raspberrypi4-64", "Raspberry Pi 4 (using 64bit OS)", "aarch64"),
    DeviceType("intel-nuc", "Intel NUC", "amd64", aliases=("nuc",)),
    DeviceType("beaglebone-black", "BeagleBone Black", "armv7hf", aliases=("beaglebone",)),
]


@pytest.mark.parametrize(
    ("query", "slugs"),
    [
        ("", ["beaglebone-black", "intel-nuc", "raspberrypi4-64"]),
        ("pi 4", ["raspberrypi4-64"]),
        ("NUC", ["intel-nuc"]),
        ("beaglebone", ["beaglebone-black"]),
        ("armv7hf", ["beaglebone-black"]),
        ("aarch64 intel", []),
    ],
    ids=["all", "words_in_name", "alias_any_case", "alias", "architecture", "every_word"],
)
def test_device_type_search_matches_name_slug_alias_and_arch(
    qtbot: QtBot, query: str, slugs: list[str]
) -> None:
    model = DeviceTypeModel()
    model.set_device_types(TYPES)
    proxy = DeviceTypeFilter()
    proxy.setSourceModel(model)
    proxy.set_search(query)
    found = [proxy.index(r, 1).data().split()[0] for r in range(proxy.rowCount())]
    assert found == slugs


def _v(
    raw: str,
    *,
    os_type: str = "default",
    variant: str | None = None,
    final: bool = True,
    recommended: bool = False,
) -> OsVersion:
    return OsVersion(
        raw,
        "raspberrypi4-64",
        variant=variant,
        os_type=os_type,
        is_final=final,
        is_recommended=recommended,
    )


VERSIONS = [
    _v("2025.7.0", os_type="esr", recommended=True),
    _v("6.5.53", final=False),
    _v("6.5.50+rev8", recommended=True),
    _v("2.80.3+rev1.prod", variant="prod"),
    _v("2.80.3+rev1.dev", variant="dev"),
]


@pytest.mark.parametrize(
    ("which", "shown"),
    [
        (VersionFilter(), ["6.5.50+rev8", "2.80.3+rev1.prod"]),
        (VersionFilter(drafts=True), ["6.5.53", "6.5.50+rev8", "2.80.3+rev1.prod"]),
        (VersionFilter(development=True), ["6.5.50+rev8", "2.80.3+rev1.dev"]),
        (VersionFilter(esr=True), ["2025.7.0"]),
    ],
    ids=["production", "drafts", "development", "esr"],
)
def test_version_filters(which: VersionFilter, shown: list[str]) -> None:
    assert [v.raw_version for v in visible_versions(VERSIONS, which)] == shown


def test_default_version_is_the_recommended_one() -> None:
    chosen = default_version(visible_versions(VERSIONS, VersionFilter(drafts=True)))
    assert chosen is not None and chosen.raw_version == "6.5.50+rev8"


CARD = Drive(
    "/dev/sdb",
    32 * 10**9,
    dev="8:16",
    description="SanDisk Ultra",
    bus="usb",
    removable=True,
    serial="A1",
)
DISK = Drive("/dev/vda", 256 * 10**9, dev="254:0", bus="virtio", internal=True)


def _rows(model: DriveModel) -> list[str]:
    return [model.item(r).drive.path for r in range(model.rowCount())]


def test_hotplug_events_add_and_remove_rows(qtbot: QtBot) -> None:
    model = DriveModel()
    model.apply(DriveEvent(DriveAction.ADD, CARD))
    model.apply(DriveEvent(DriveAction.ADD, DISK))
    assert _rows(model) == ["/dev/sdb", "/dev/vda"]
    model.apply(DriveEvent(DriveAction.REMOVE, CARD))
    assert _rows(model) == ["/dev/vda"]


def test_removing_a_selected_drive_reports_it(qtbot: QtBot) -> None:
    model = DriveModel()
    model.add(CARD)
    assert model.set_checked(CARD.path, True)
    with qtbot.waitSignal(model.drive_removed) as removed:
        model.apply(DriveEvent(DriveAction.REMOVE, CARD))
    assert removed.args == [CARD]
    assert model.selected == []


def test_another_card_in_the_same_reader_is_not_selected(qtbot: QtBot) -> None:
    model = DriveModel()
    model.add(CARD)
    model.set_checked(CARD.path, True)
    model.apply(
        DriveEvent(
            DriveAction.CHANGE, Drive("/dev/sdb", 64 * 10**9, dev="8:16", bus="usb", serial="B2")
        )
    )
    assert model.selected == []


def test_internal_drive_needs_confirmation_before_it_is_selected(qtbot: QtBot) -> None:
    model = DriveModel()
    model.add(DISK)
    with qtbot.waitSignal(model.confirmation_needed):
        assert not model.set_checked(DISK.path, True)
    assert model.selected == []
    model.confirm_system(DISK.path)
    assert [r.drive for r in model.selected] == [DISK]


def test_drive_filter_hides_system_drives_until_show_all(qtbot: QtBot) -> None:
    model = DriveModel()
    model.add(CARD)
    model.add(DISK)
    proxy = DriveFilter()
    proxy.setSourceModel(model)
    assert proxy.rowCount() == 1
    proxy.set_show_all(True)
    assert proxy.rowCount() == 2


def test_too_small_drive_cannot_be_ticked(qtbot: QtBot) -> None:
    model = DriveModel()
    model.add(CARD)
    model.set_image(64 * 10**9, None)
    index = model.index(0, 0)
    assert not model.flags(index) & Qt.ItemFlag.ItemIsUserCheckable
    assert not model.set_checked(CARD.path, True)
    assert "too small" in model.index(0, 3).data()


def _job() -> JobProgress:
    return JobProgress.start([("/dev/sdb", "card", False), ("/tmp/x.img", "x.img", True)])


def test_job_state_follows_the_targets() -> None:
    job = _job()
    assert job.state is FlashState.PREPARING
    job.apply(PhaseChanged(Phase.DOWNLOADING))
    assert job.state is FlashState.PREPARING
    job.apply(PhaseChanged(Phase.WRITING, "/dev/sdb"))
    assert job.state is FlashState.WRITING
    job.apply(PhaseChanged(Phase.VERIFYING, "/dev/sdb"))
    job.apply(PhaseChanged(Phase.VERIFYING, "/tmp/x.img"))
    assert job.state is FlashState.VERIFYING


@pytest.mark.parametrize(
    ("results", "cancelled", "state"),
    [
        (
            [TargetResult("/dev/sdb", True), TargetResult("/tmp/x.img", True)],
            False,
            FlashState.DONE,
        ),
        (
            [
                TargetResult("/dev/sdb", True),
                TargetResult("/tmp/x.img", False, error=WriteFailed("x")),
            ],
            False,
            FlashState.FAILED,
        ),
        (
            [
                TargetResult("/dev/sdb", False, error=Cancelled()),
                TargetResult("/tmp/x.img", False, error=Cancelled()),
            ],
            True,
            FlashState.CANCELLED,
        ),
    ],
    ids=["all_ok", "one_failed", "cancelled"],
)
def test_job_ends_in_the_state_its_results_say(
    results: list[TargetResult], cancelled: bool, state: FlashState
) -> None:
    job = _job()
    job.finish(results, cancelled=cancelled)
    assert job.state is state


def test_retry_resets_only_the_failed_targets() -> None:
    job = _job()
    job.finish(
        [TargetResult("/dev/sdb", True), TargetResult("/tmp/x.img", False, error=WriteFailed("x"))],
        cancelled=False,
    )
    job.retry(job.failed_targets)
    assert job.targets["/dev/sdb"].result is not None
    assert job.targets["/tmp/x.img"].result is None
    assert job.state is FlashState.PREPARING


def test_warnings_are_kept_as_card_notes() -> None:
    job = _job()
    assert job.apply(Log("warning", "slow card", "/dev/sdb")) == "/dev/sdb"
    assert job.targets["/dev/sdb"].notes == ["slow card"]


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (TargetStatus("/dev/sdb", "card"), "Waiting"),
        (
            TargetStatus("/dev/sdb", "card", Phase.WRITING, 45, 100, 21.3e6, 70.0),
            "Writing · 45% · 21.3 MB/s · 1 min 10 s left",
        ),
        (TargetStatus("/dev/sdb", "card", Phase.SYNCING), "Flushing the drive's cache"),
        (
            TargetStatus(
                "/dev/sdb", "card", result=TargetResult("/dev/sdb", True, 512 * 10**6, 42.4, True)
            ),
            "Done · 512.0 MB written in 42 s · verified",
        ),
        (
            TargetStatus(
                "/dev/sdb", "card", result=TargetResult("/dev/sdb", False, error=Cancelled())
            ),
            "Cancelled",
        ),
    ],
    ids=["waiting", "writing", "syncing", "done", "cancelled"],
)
def test_status_line(status: TargetStatus, line: str) -> None:
    assert status_line(status) == line


@pytest.mark.parametrize(
    ("size", "text"),
    [(512, "512 B"), (1500, "1.5 kB"), (31_900_000_000, "31.9 GB"), (2 * 10**12, "2.0 TB")],
)
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, ""),
        (0.0, "under 1 s"),
        (0.4, "under 1 s"),
        (0.6, "1 s"),
        (45.2, "45 s"),
        (185, "3 min 05 s"),
        (3720, "1 h 02 min"),
    ],
)
def test_human_duration(seconds: float | None, text: str) -> None:
    assert human_duration(seconds) == text


def test_shared_progress_does_not_touch_targets() -> None:
    job = _job()
    assert job.apply(Progress(Phase.DOWNLOADING, 10, 100)) is None
    assert job.shared_progress is not None and job.shared_progress.done_bytes == 10


def test_drive_filter_orders_naturally_with_files_last(qtbot: QtBot) -> None:
    model = DriveModel()
    for path in ("/dev/loop10", "/tmp/card.img", "/dev/loop2", "/dev/sdb"):
        model.add(Drive(path, 10**9, is_file=path.endswith(".img"), bus="loop"))
    proxy = DriveFilter()
    proxy.setSourceModel(model)
    order = [
        model.item(proxy.mapToSource(proxy.index(r, 0)).row()).drive.path
        for r in range(proxy.rowCount())
    ]
    assert order == ["/dev/loop2", "/dev/loop10", "/dev/sdb", "/tmp/card.img"]
