"""Step 2, the device's settings: network (Ethernet or Wi-Fi, static IPv4), hostname, update
poll interval, development mode, an optional fleet with its provisioning key, and extra
NetworkManager connection files.

Each field is checked by the core's own validators as it is edited (after it was first touched)
and all of them when the user moves on; the rule a field breaks appears right under it. Nothing
is written anywhere until the flash.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from flasher.errors import ConfigError
from flasher.gui.controller import Selection
from flasher.gui.pages.fields import FieldSet, parse_dns, parse_fleet_id, read_keyfile
from flasher.gui.theme import em, icon
from flasher.gui.widgets import FieldError, SecretEdit, heading, note
from flasher.models import (
    DeviceConfig,
    Keyfile,
    NetworkKind,
    NetworkSettings,
    Secret,
    StaticIPv4,
)
from flasher.settings import Settings
from flasher.validation import (
    validate_device_config,
    validate_dns,
    validate_hostname,
    validate_ipv4_address,
    validate_keyfile,
    validate_netmask,
    validate_poll_interval,
    validate_provisioning_key,
    validate_static_ipv4,
    validate_wifi_key,
    validate_wifi_ssid,
)


def _form(group: QGroupBox) -> QFormLayout:
    form = QFormLayout(group)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    # In a narrow window a label goes above its field rather than squeezing it.
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    return form


class ConfigurePage(QWidget):
    changed = Signal()

    def __init__(
        self, settings: Settings, device_api_url: str | None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._api_url = device_api_url
        self._selection: Selection | None = None
        self.keyfiles: list[Keyfile] = []
        self.fields = FieldSet()
        outer = QVBoxLayout(self)
        outer.addWidget(heading("Configure the device", self))
        self.configure_check = QCheckBox("&Write these settings into the image", self)
        self.configure_check.setChecked(True)
        self.configure_check.toggled.connect(self._configure_toggled)
        outer.addWidget(self.configure_check)
        self.unconfigurable = note("", self)
        self.unconfigurable.hide()
        outer.addWidget(self.unconfigurable)
        self.general_error = FieldError(self)
        outer.addWidget(self.general_error)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.form = QWidget(scroll)
        grid = QGridLayout(self.form)
        grid.setContentsMargins(0, 0, em(self, 0.5), 0)
        grid.setHorizontalSpacing(em(self, 1.2))
        grid.addWidget(self._network_group(), 0, 0)
        grid.addWidget(self._ip_group(), 1, 0)
        grid.addWidget(self._device_group(), 0, 1)
        grid.addWidget(self._fleet_group(), 1, 1)
        grid.addWidget(self._keyfile_group(), 2, 0, 1, 2)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        grid.setRowStretch(3, 1)
        scroll.setWidget(self.form)
        outer.addWidget(scroll, 1)
        self.remember_check = QCheckBox(
            "Remember the Wi-Fi key and provisioning key on this computer", self
        )
        outer.addWidget(self.remember_check)
        self.restore(settings)
        self._network_changed()

    # --- groups -------------------------------------------------------------------------------

    def _network_group(self) -> QGroupBox:
        group = QGroupBox("Network", self.form)
        form = _form(group)
        kinds = QHBoxLayout()
        self.ethernet_radio = QRadioButton("E&thernet", group)
        self.wifi_radio = QRadioButton("W&i-Fi", group)
        self.network_group = QButtonGroup(group)
        self.network_group.addButton(self.ethernet_radio)
        self.network_group.addButton(self.wifi_radio)
        kinds.addWidget(self.ethernet_radio)
        kinds.addWidget(self.wifi_radio)
        kinds.addStretch(1)
        form.addRow(kinds)
        self.ssid_edit = QLineEdit(group)
        self.ssid_edit.setAccessibleName("Wi-Fi network name")
        self.ssid_error = self._row(
            form,
            "&SSID (network name):",
            self.ssid_edit,
            "ssid",
            lambda: validate_wifi_ssid(self.ssid_edit.text()),
        )
        self.key_edit = SecretEdit(group)
        self.key_edit.setPlaceholderText("the network's passphrase")
        self.key_edit.setAccessibleName("Wi-Fi key")
        self.key_error = self._row(
            form,
            "&Key:",
            self.key_edit,
            "key",
            lambda: validate_wifi_key(Secret(self.key_edit.text())),
        )
        # An empty key means an open network only when that is ticked here.
        self.open_check = QCheckBox("&Open network (no key)", group)
        form.addRow("", self.open_check)
        self.open_check.toggled.connect(lambda _on: self._edited("key"))
        self.hidden_check = QCheckBox("&Hidden network", group)
        form.addRow("", self.hidden_check)
        self.wifi_widgets: list[QWidget] = [
            self.ssid_edit,
            self.key_edit,
            self.open_check,
            self.hidden_check,
        ]
        self.ethernet_radio.toggled.connect(self._network_changed)
        return group

    def _ip_group(self) -> QGroupBox:
        group = QGroupBox("Static I&P address (IPv4)", self.form)
        group.setCheckable(True)
        group.setChecked(False)
        self.ip_group = group
        form = _form(group)
        self.address_edit = QLineEdit(group)
        self.address_edit.setPlaceholderText("192.168.1.50")
        self.address_error = self._row(
            form,
            "&Address:",
            self.address_edit,
            "address",
            lambda: validate_ipv4_address(self.address_edit.text()),
        )
        self.netmask_edit = QLineEdit(group)
        self.netmask_edit.setPlaceholderText("255.255.255.0 or 24")
        self.netmask_error = self._row(
            form,
            "Net&mask:",
            self.netmask_edit,
            "netmask",
            lambda: validate_netmask(self.netmask_edit.text()),
        )
        self.gateway_edit = QLineEdit(group)
        self.gateway_edit.setPlaceholderText("192.168.1.1")
        self.gateway_error = self._row(
            form, "&Gateway:", self.gateway_edit, "gateway", self._check_gateway
        )
        self.dns_edit = QLineEdit(group)
        self.dns_edit.setPlaceholderText("1.1.1.1, 8.8.8.8")
        self.dns_error = self._row(
            form,
            "DNS ser&vers:",
            self.dns_edit,
            "dns",
            lambda: validate_dns(parse_dns(self.dns_edit.text())),
        )
        group.toggled.connect(lambda _on: self._edited("static"))
        return group

    def _device_group(self) -> QGroupBox:
        group = QGroupBox("Device", self.form)
        form = _form(group)
        self.hostname_edit = QLineEdit(group)
        self.hostname_edit.setPlaceholderText("default: the device's UUID")
        self.hostname_error = self._row(
            form,
            "H&ostname:",
            self.hostname_edit,
            "hostname",
            lambda: validate_hostname(self.hostname_text()),
        )
        self.poll_spin = QSpinBox(group)
        self.poll_spin.setRange(0, 100_000)
        self.poll_spin.setSpecialValueText("default (10 min)")
        self.poll_spin.setSuffix(" min")
        self.poll_spin.setAccessibleName("update poll interval in minutes")
        self.poll_error = self._row(
            form,
            "&Update poll interval:",
            self.poll_spin,
            "poll",
            lambda: validate_poll_interval(self.poll_spin.value() or None),
            signal="valueChanged",
        )
        self.dev_check = QCheckBox("&Development mode", group)
        self.dev_check.setToolTip(
            "Opens SSH as root and local mode, for building and "
            "debugging; not for devices in the field."
        )
        self.dev_error = FieldError(group)
        form.addRow("", self.dev_check)
        form.addRow("", self.dev_error)
        self.fields.add("development_mode", self.dev_error, lambda: None)
        self.dev_check.toggled.connect(lambda _on: self._edited("development_mode"))
        self.logging_check = QCheckBox("Persistent logging", group)
        form.addRow("", self.logging_check)
        return group

    def _fleet_group(self) -> QGroupBox:
        group = QGroupBox("Register in a &fleet (optional)", self.form)
        group.setCheckable(True)
        group.setChecked(False)
        self.fleet_group = group
        form = _form(group)
        self.fleet_edit = QLineEdit(group)
        self.fleet_edit.setPlaceholderText("numeric ID from the dashboard URL")
        self.fleet_error = self._row(
            form,
            "Fl&eet ID:",
            self.fleet_edit,
            "fleet",
            lambda: parse_fleet_id(self.fleet_edit.text()),
        )
        self.provisioning_edit = SecretEdit(group)
        self.provisioning_error = self._row(
            form,
            "Provisioning ke&y:",
            self.provisioning_edit,
            "provisioning",
            lambda: validate_provisioning_key(self._provisioning_key(), 1),
        )
        group.toggled.connect(lambda _on: self._edited("fleet_group"))
        return group

    def _keyfile_group(self) -> QGroupBox:
        group = QGroupBox("Extra network connections (NetworkManager files)", self.form)
        layout = QHBoxLayout(group)
        self.keyfile_list = QListWidget(group)
        self.keyfile_list.setAccessibleName("extra connection files")
        self.keyfile_list.setMaximumHeight(em(self, 5))
        buttons = QVBoxLayout()
        self.add_keyfile = QPushButton("Add &connection file…", group)
        self.remove_keyfile = QPushButton("&Remove", group)
        self.add_keyfile.clicked.connect(self._browse_keyfile)
        self.remove_keyfile.clicked.connect(self._remove_keyfile)
        buttons.addWidget(self.add_keyfile)
        buttons.addWidget(self.remove_keyfile)
        buttons.addStretch(1)
        column = QVBoxLayout()
        column.addWidget(self.keyfile_list)
        self.keyfile_error = FieldError(group)
        column.addWidget(self.keyfile_error)
        self.fields.add("keyfile", self.keyfile_error, self._check_keyfiles)
        layout.addLayout(column, 1)
        layout.addLayout(buttons)
        return group

    def _row(
        self,
        form: QFormLayout,
        label: str,
        editor: QWidget,
        key: str,
        check: Callable[[], object],
        signal: str = "textChanged",
    ) -> FieldError:
        error = FieldError(editor.parentWidget())
        column = QVBoxLayout()
        column.setSpacing(0)
        column.addWidget(editor)
        column.addWidget(error)
        title = QLabel(label, editor.parentWidget())
        title.setBuddy(editor)
        form.addRow(title, column)
        self.fields.add(key, error, check)
        getattr(editor, signal).connect(lambda *_args: self._edited(key))
        return error

    # --- values -------------------------------------------------------------------------------

    def hostname_text(self) -> str | None:
        return self.hostname_edit.text().strip() or None

    def _provisioning_key(self) -> Secret | None:
        text = self.provisioning_edit.text().strip()
        return Secret(text) if text else None

    def _check_gateway(self) -> None:
        gateway = validate_ipv4_address(self.gateway_edit.text(), "ipv4.gateway")
        try:
            validate_ipv4_address(self.address_edit.text())
            validate_netmask(self.netmask_edit.text())
        except ConfigError:
            return  # the subnet rules need a valid address and netmask first
        validate_static_ipv4(
            StaticIPv4(
                self.address_edit.text().strip(), self.netmask_edit.text().strip(), str(gateway)
            )
        )

    def _check_keyfiles(self) -> None:
        for keyfile in self.keyfiles:
            validate_keyfile(keyfile)

    def _network_changed(self) -> None:
        wifi = self.wifi_radio.isChecked()
        for widget in self.wifi_widgets:
            widget.setEnabled(wifi)
        self.fields.set_active("ssid", wifi)
        self.fields.set_active("key", wifi)
        self._edited("network")

    def _configure_toggled(self, on: bool) -> None:
        self.form.setEnabled(on)
        self.remember_check.setEnabled(on)
        self.changed.emit()

    def _edited(self, key: str) -> None:
        for name in ("address", "netmask", "gateway", "dns"):
            self.fields.set_active(name, self.ip_group.isChecked())
        for name in ("fleet", "provisioning"):
            self.fields.set_active(name, self.fleet_group.isChecked())
        self.fields.touch(key)
        if key in ("address", "netmask"):
            self.fields.touch_if_shown("gateway")
        self.fields.refresh()
        self.general_error.show_error(None)
        self.changed.emit()

    def _browse_keyfile(self) -> None:
        dialog = QFileDialog(self, "Add NetworkManager connection files")
        dialog.setObjectName("keyfile-dialog")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFiles)
        dialog.setOption(QFileDialog.Option.DontUseNativeDialog, True)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.filesSelected.connect(self.add_keyfiles)
        dialog.open()

    def add_keyfiles(self, paths: list[str]) -> None:
        for path in paths:
            try:
                keyfile = read_keyfile(path)
            except ConfigError as err:
                self.keyfile_error.show_error(str(err))
                return
            self.keyfiles = [k for k in self.keyfiles if k.name != keyfile.name] + [keyfile]
        self._show_keyfiles()

    def _remove_keyfile(self) -> None:
        row = self.keyfile_list.currentRow()
        if 0 <= row < len(self.keyfiles):
            del self.keyfiles[row]
            self._show_keyfiles()

    def _show_keyfiles(self) -> None:
        self.keyfile_list.clear()
        for keyfile in self.keyfiles:
            self.keyfile_list.addItem(keyfile.name)
            self.keyfile_list.item(self.keyfile_list.count() - 1).setIcon(icon("file"))
        self._edited("keyfile")

    # --- selection, settings and the result -------------------------------------------------

    def set_selection(self, selection: Selection | None) -> None:
        self._selection = selection
        configurable = selection is not None and selection.device_type is not None
        if configurable and not self.configure_check.isEnabled():
            self.configure_check.setChecked(True)  # it was only off for the previous image
        self.configure_check.setEnabled(configurable)
        if not configurable:
            self.configure_check.setChecked(False)
            self.unconfigurable.setText(
                "This image does not say which device type it is for, "
                "so it will be written as it is."
            )
        elif (
            selection is not None
            and selection.spec.development
            and not self.fields.touched("development_mode")
        ):
            self.dev_check.setChecked(True)
        self.unconfigurable.setVisible(not configurable)
        self.changed.emit()

    def restore(self, settings: Settings) -> None:
        wifi = settings.network == NetworkKind.WIFI.value
        (self.wifi_radio if wifi else self.ethernet_radio).setChecked(True)
        self.ssid_edit.setText(settings.wifi_ssid or "")
        self.hidden_check.setChecked(settings.wifi_hidden)
        self.ip_group.setChecked(settings.static_ip)
        self.address_edit.setText(settings.ip_address or "")
        self.netmask_edit.setText(settings.ip_netmask or "")
        self.gateway_edit.setText(settings.ip_gateway or "")
        self.dns_edit.setText(", ".join(settings.dns_servers))
        self.poll_spin.setValue(settings.poll_interval_min or 0)
        self.hostname_edit.setText(settings.hostname or "")
        self.dev_check.setChecked(settings.development_mode)
        self.fleet_group.setChecked(settings.fleet_id is not None)
        self.fleet_edit.setText(str(settings.fleet_id) if settings.fleet_id else "")
        self.remember_check.setChecked(settings.remember_secrets)
        self.key_edit.setText(settings.wifi_key or "")
        self.provisioning_edit.setText(settings.provisioning_key or "")
        # Restored values are judged when the user edits them or moves on, not at start.
        self.fields.clear_touched()

    def validate_all(self) -> bool:
        """Show every field's error; True when the settings can be written."""
        if not self.configure_check.isChecked():
            return True
        self.fields.touch_all()
        if not self.fields.refresh():
            return False
        try:
            self.config()
        except ConfigError as err:
            if not self.fields.show_for(err.field, err):
                self.general_error.show_error(str(err))
            return False
        return True

    def is_valid(self) -> bool:
        return not self.configure_check.isChecked() or self.fields.all_valid()

    def config(self) -> DeviceConfig | None:
        """The settings as a validated DeviceConfig; None to write the image as it is."""
        selection = self._selection
        if (
            not self.configure_check.isChecked()
            or selection is None
            or selection.device_type is None
        ):
            return None
        wifi = self.wifi_radio.isChecked()
        key = self.key_edit.text()
        ipv4 = None
        if self.ip_group.isChecked():
            ipv4 = StaticIPv4(
                self.address_edit.text().strip(),
                self.netmask_edit.text().strip(),
                self.gateway_edit.text().strip(),
                parse_dns(self.dns_edit.text()),
            )
        network = NetworkSettings(
            kind=NetworkKind.WIFI if wifi else NetworkKind.ETHERNET,
            wifi_ssid=self.ssid_edit.text() if wifi else None,
            wifi_key=Secret(key) if wifi and key else None,
            hidden=wifi and self.hidden_check.isChecked(),
            ipv4=ipv4,
            open_network=wifi and not key and self.open_check.isChecked(),
        )
        fleet = self.fleet_group.isChecked()
        config = DeviceConfig(
            device_type=selection.device_type,
            os_version=selection.os_version,
            fleet_id=parse_fleet_id(self.fleet_edit.text()) if fleet else None,
            provisioning_key=self._provisioning_key() if fleet else None,
            network=network,
            poll_interval_min=self.poll_spin.value() or None,
            hostname=self.hostname_text(),
            development_mode=self.dev_check.isChecked(),
            persistent_logging=self.logging_check.isChecked(),
            extra_keyfiles=tuple(self.keyfiles),
            api_url=self._api_url,
        )
        validate_device_config(config)
        return config

    def summary(self) -> str:
        config = None
        try:
            config = self.config()
        except ConfigError:
            return ""
        if config is None:
            return "image as it is"
        network = config.network
        words = [f"Wi-Fi “{network.wifi_ssid}”" if network.kind is NetworkKind.WIFI else "Ethernet"]
        if network.ipv4 is not None:
            words.append(network.ipv4.address)
        if config.hostname:
            words.append(config.hostname)
        if config.development_mode:
            words.append("development")
        return ", ".join(words)

    def remember_secrets(self) -> bool:
        return self.remember_check.isChecked()

    def focus_first(self) -> None:
        (self.ssid_edit if self.wifi_radio.isChecked() else self.ethernet_radio).setFocus()
