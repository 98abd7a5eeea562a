"""Qt item models over core values: device types (searchable by name, slug, alias and
architecture), OS versions (filtered by line, variant and draft state), and the live drive list
(hotplug events, file targets, check state, inline problems).

Models hold frozen core values (DeviceType, OsVersion, Drive, Problem) and never call the core
themselves; the controller fills them from worker results on the GUI thread.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)

from flasher.drives.constraints import Problem, Severity, check_drive
from flasher.drives.monitor import DriveAction, DriveEvent
from flasher.gui.progress import human_bytes
from flasher.gui.theme import drive_icon, icon
from flasher.models import DeviceType, Drive, OsVersion

Index = QModelIndex | QPersistentModelIndex
ValueRole = Qt.ItemDataRole.UserRole + 1
SearchRole = Qt.ItemDataRole.UserRole + 2
_ROOT = QModelIndex()


class _HeadedTableModel(QAbstractTableModel):
    """A table whose columns are its HEADERS, shown as horizontal header labels."""

    HEADERS: tuple[str, ...] = ()

    def columnCount(self, parent: Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        return None


class DeviceTypeModel(_HeadedTableModel):
    """Device types as rows: name, slug (with aliases) and CPU architecture."""

    HEADERS = ("Device type", "Slug", "Architecture")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._items: list[DeviceType] = []

    def set_device_types(self, items: Iterable[DeviceType]) -> None:
        self.beginResetModel()
        self._items = sorted(items, key=lambda d: d.name.lower())
        self.endResetModel()

    def row_of(self, slug: str) -> int:
        for row, item in enumerate(self._items):
            if slug == item.slug or slug in item.aliases:
                return row
        return -1

    def rowCount(self, parent: Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        item = self._items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            if index.column() == 0:
                return item.name
            if index.column() == 1:
                return item.slug + (f"  ({', '.join(item.aliases)})" if item.aliases else "")
            return item.arch
        if role == Qt.ItemDataRole.ToolTipRole:
            aliases = f"; also known as {', '.join(item.aliases)}" if item.aliases else ""
            media = "; the image installs itself to internal storage" if item.flasher else ""
            return f"{item.name}: {item.slug}, {item.arch}{aliases}{media}"
        if role == ValueRole:
            return item
        if role == SearchRole:
            return " ".join((item.name, item.slug, *item.aliases, item.arch)).lower()
        return None


class _Filter(QSortFilterProxyModel):
    def refilter(self, change: Callable[[], None] = lambda: None) -> None:
        """Apply `change` to the filter's state and re-run the filter on the rows."""
        if hasattr(self, "beginFilterChange"):  # Qt 6.10+
            self.beginFilterChange()
            change()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            change()
            self.invalidateRowsFilter()


class DeviceTypeFilter(_Filter):
    """Keeps rows whose name, slug, aliases or architecture contain every typed word."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._terms: tuple[str, ...] = ()

    def set_search(self, text: str) -> None:
        self.refilter(lambda: setattr(self, "_terms", tuple(text.lower().split())))

    def filterAcceptsRow(self, source_row: int, source_parent: Index) -> bool:
        model = self.sourceModel()
        haystack = str(model.data(model.index(source_row, 0, source_parent), SearchRole))
        return all(term in haystack for term in self._terms)


@dataclass(frozen=True)
class VersionFilter:
    esr: bool = False
    development: bool = False
    drafts: bool = False


def visible_versions(versions: Sequence[OsVersion], which: VersionFilter) -> list[OsVersion]:
    """The versions to offer: one OS line (default or ESR), the production or development
    variant of split releases (unified ones always), drafts only on request."""
    line = "esr" if which.esr else "default"
    unwanted_variant = "prod" if which.development else "dev"
    return [
        v
        for v in versions
        if v.os_type == line
        and v.variant != unwanted_variant
        and (which.drafts or v.is_final)
        and not v.is_invalidated
    ]


def default_version(versions: Sequence[OsVersion]) -> OsVersion | None:
    """The recommended version, else the newest final one, else the newest."""
    for version in versions:
        if version.is_recommended:
            return version
    finals = [v for v in versions if v.is_final]
    candidates = finals or list(versions)
    return candidates[0] if candidates else None


def version_label(version: OsVersion) -> str:
    notes = []
    if version.line:
        notes.append(version.line)
    if version.is_recommended:
        notes.append("recommended")
    if not version.is_final:
        notes.append("draft")
    if version.variant == "dev":
        notes.append("development")
    return f"v{version.raw_version}" + (f" ({', '.join(notes)})" if notes else "")


class VersionModel(QAbstractListModel):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._items: list[OsVersion] = []

    def set_versions(self, items: Sequence[OsVersion]) -> None:
        self.beginResetModel()
        self._items = list(items)
        self.endResetModel()

    @property
    def versions(self) -> list[OsVersion]:
        return list(self._items)

    def row_of(self, raw_version: str) -> int:
        for row, item in enumerate(self._items):
            if item.raw_version == raw_version:
                return row
        return -1

    def rowCount(self, parent: Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        item = self._items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return version_label(item)
        if role == Qt.ItemDataRole.DecorationRole and item.known_issue:
            return icon("warning")
        if role == Qt.ItemDataRole.ToolTipRole and item.known_issue:
            return f"Known issue: {item.known_issue}"
        if role == ValueRole:
            return item
        return None


# The Notes column's short words; the full sentence is in the tooltip and the banner.
PROBLEM_WORDS = {
    "system": "system drive",
    "too_small": "too small",
    "read_only": "write-protected",
    "source_drive": "holds the source image",
    "gone": "unplugged",
    "duplicate": "listed twice",
    "large_drive": "unusually large",
    "mounted": "mounted: will be unmounted",
    "internal": "internal disk",
}


@dataclass(frozen=True)
class DriveRow:
    drive: Drive
    problems: tuple[Problem, ...] = ()
    checked: bool = False

    @property
    def blocked(self) -> bool:
        """Any error (a system drive in use included); an internal disk only needs a typed
        confirmation."""
        return any(p.severity is Severity.ERROR for p in self.problems)


def drive_title(drive: Drive) -> str:
    if drive.is_file:
        return os.path.basename(drive.path)
    if drive.bus == "loop":
        return (
            f"Loop device ({os.path.basename(drive.description)})"
            if drive.description
            else "Loop device"
        )
    return drive.description or drive.model or os.path.basename(drive.path)


def drive_location(drive: Drive) -> str:
    if drive.is_file:
        return f"image file in {os.path.dirname(drive.path)}"
    bus = {"usb": "USB", "mmc": "SD/MMC", "nvme": "NVMe", "loop": "loop"}.get(
        drive.bus, drive.bus.upper() or "internal"
    )
    return f"{drive.path} · {bus}"


class DriveModel(_HeadedTableModel):
    """Drives and file targets. Checking a row selects it as a target; checking a system drive
    emits `confirmation_needed` instead, until `confirm_system` records the typed confirmation."""

    HEADERS = ("Drive", "Size", "Location", "Notes")
    selection_changed = Signal()
    confirmation_needed = Signal(object)  # the Drive
    drive_removed = Signal(object)  # a checked Drive that disappeared

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[DriveRow] = []
        self._confirmed_system: set[str] = set()
        self._image_size_bytes = 0
        self._source_path: str | None = None

    # --- content ------------------------------------------------------------------------------

    def _problems(self, drive: Drive) -> tuple[Problem, ...]:
        # An internal disk is selected only after its name is typed (set_checked): that is
        # its own confirmation, so here it is a warning, not an error.
        return tuple(
            check_drive(
                drive, self._image_size_bytes, source_path=self._source_path, allow_internal=True
            )
        )

    def set_image(self, size_bytes: int | None, source_path: str | None) -> None:
        """The image about to be written (its size and file), to recheck every drive."""
        self._image_size_bytes = size_bytes or 0
        self._source_path = source_path
        self._rows = [replace(r, problems=self._problems(r.drive)) for r in self._rows]
        for row, item in enumerate(self._rows):
            if item.checked and item.blocked:
                self._rows[row] = replace(item, checked=False)
        if self._rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._rows) - 1, 3))
        self.selection_changed.emit()

    def apply(self, event: DriveEvent) -> None:
        """A hotplug event from the drive monitor."""
        if event.action is DriveAction.REMOVE:
            self.remove(event.drive.path)
        else:
            self.add(event.drive)

    def add(self, drive: Drive, *, checked: bool = False) -> None:
        row = self.row_of(drive.path)
        item = DriveRow(drive, self._problems(drive), checked)
        if row >= 0:
            # A changed drive (another card in the same reader) loses its selection.
            same = (
                self._rows[row].drive.serial == drive.serial
                and self._rows[row].drive.size_bytes == drive.size_bytes
            )
            self._rows[row] = replace(item, checked=self._rows[row].checked and same)
            self.dataChanged.emit(self.index(row, 0), self.index(row, 3))
            self.selection_changed.emit()
            return
        at = len(self._rows)
        self.beginInsertRows(_ROOT, at, at)
        self._rows.append(item)
        self.endInsertRows()
        if checked:
            self.selection_changed.emit()

    def add_file_target(self, path: str) -> None:
        """A regular file to write the image into ("Save to image file…"), selected."""
        path = os.path.abspath(path)
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        self.add(
            Drive(path=path, size_bytes=size, is_file=True, description="Image file"), checked=True
        )

    def remove(self, path: str) -> None:
        row = self.row_of(path)
        if row < 0:
            return
        gone = self._rows[row]
        self.beginRemoveRows(_ROOT, row, row)
        del self._rows[row]
        self.endRemoveRows()
        self._confirmed_system.discard(path)
        if gone.checked:
            self.selection_changed.emit()
            self.drive_removed.emit(gone.drive)

    def row_of(self, path: str) -> int:
        for row, item in enumerate(self._rows):
            if item.drive.path == path:
                return row
        return -1

    def item(self, row: int) -> DriveRow:
        return self._rows[row]

    @property
    def drives(self) -> list[Drive]:
        return [r.drive for r in self._rows]

    @property
    def selected(self) -> list[DriveRow]:
        return [r for r in self._rows if r.checked]

    def set_checked(self, path: str, checked: bool) -> bool:
        row = self.row_of(path)
        if row < 0:
            return False
        item = self._rows[row]
        if checked and item.blocked:
            return False
        fixed = item.drive.system or item.drive.internal
        if checked and fixed and path not in self._confirmed_system:
            self.confirmation_needed.emit(item.drive)
            return False
        self._rows[row] = replace(item, checked=checked)
        self.dataChanged.emit(self.index(row, 0), self.index(row, 3))
        self.selection_changed.emit()
        return True

    def confirm_system(self, path: str) -> None:
        """The user typed the drive's name: it may be selected now, and it is."""
        self._confirmed_system.add(path)
        self.set_checked(path, True)

    # --- Qt -----------------------------------------------------------------------------------

    def rowCount(self, parent: Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def flags(self, index: Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        base = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == 0 and not self._rows[index.row()].blocked:
            base |= Qt.ItemFlag.ItemIsUserCheckable
        return base

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        item = self._rows[index.row()]
        drive, column = item.drive, index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if column == 0:
                return drive_title(drive)
            if column == 1:
                return (
                    "new file"
                    if drive.is_file and not drive.size_bytes
                    else human_bytes(drive.size_bytes)
                )
            if column == 2:
                return drive_location(drive)
            return ", ".join(
                dict.fromkeys(PROBLEM_WORDS.get(p.code, p.code) for p in item.problems)
            )
        if role == Qt.ItemDataRole.CheckStateRole and column == 0:
            return Qt.CheckState.Checked if item.checked else Qt.CheckState.Unchecked
        if role == Qt.ItemDataRole.DecorationRole:
            if column == 0:
                return drive_icon(drive.bus, drive.is_file)
            if column == 3 and item.problems:
                errors = any(p.severity is Severity.ERROR for p in item.problems)
                return icon("error" if errors else "warning")
        if role == Qt.ItemDataRole.ToolTipRole:
            hints = [p.hint for p in item.problems if p.hint]
            return "\n".join([drive.path, *(p.message for p in item.problems), *hints])
        if role == ValueRole:
            return item
        return None

    def setData(self, index: Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if role != Qt.ItemDataRole.CheckStateRole or index.column() != 0:
            return False
        checked = Qt.CheckState(value) == Qt.CheckState.Checked
        return self.set_checked(self._rows[index.row()].drive.path, checked)


def _natural(path: str) -> tuple[str | int, ...]:
    """/dev/sdb before /dev/sdaa, loop2 before loop10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path))


class DriveFilter(_Filter):
    """Hides system drives unless "show all" is on (a selected one always stays visible);
    drives in natural path order, image files last."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._show_all = False
        self.sort(0)

    def set_show_all(self, show: bool) -> None:
        self.refilter(lambda: setattr(self, "_show_all", show))

    def filterAcceptsRow(self, source_row: int, source_parent: Index) -> bool:
        model = self.sourceModel()
        assert isinstance(model, DriveModel)
        item = model.item(source_row)
        hidden = item.drive.system or item.drive.internal
        return self._show_all or not hidden or item.checked

    def lessThan(self, left: Index, right: Index) -> bool:
        model = self.sourceModel()
        assert isinstance(model, DriveModel)
        a, b = model.item(left.row()).drive, model.item(right.row()).drive
        return (a.is_file, _natural(a.path)) < (b.is_file, _natural(b.path))
