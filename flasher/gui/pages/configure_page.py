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
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QRadioButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from flasher.errors import ConfigError
from flasher.gui.choices import Selection
from flasher.gui.pages.fields import (
    FieldSet,
    check_gateway,
    config_summary,
    error_text,
    field_key,
    parse_dns,
    parse_fleet_id,
)
from flasher.gui.pages.fleet_box import FleetBox
from flasher.gui.pages.keyfiles import KeyfileBox
from flasher.gui.theme import em
from flasher.gui.widgets import (
    FieldError,
    SecretEdit,
    expander,
    form_layout,
    heading,
    note,
    two_forms,
)
from flasher.models import (
    DeviceConfig,
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
    validate_netmask,
    validate_poll_interval,
    validate_wifi_key,
    validate_wifi_ssid,
)


class ConfigurePage(QWidget):
    changed = Signal()

    def __init__(
        self,
        settings: Settings,
        device_api_url: str | None,
        parent: QWidget | None = None,
        *,
        has_login: bool = False,
    ) -> None:
        super().__init__(parent)
        self._api_url = device_api_url
        self._selection: Selection | None = None
        self._key_forgotten = False
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
        grid.addWidget(self._device_group(), 0, 1)
        grid.addWidget(self._ip_group(), 1, 0, 1, 2)
        self.fleet_box = FleetBox(self.form, self._row, self._edited, has_login=has_login)
        self.fleet_group, self.fleet_edit = self.fleet_box.group, self.fleet_box.fleet_edit
        self.provisioning_edit = self.fleet_box.provisioning_edit
        self.fleet_error = self.fleet_box.fleet_error
        self.provisioning_error = self.fleet_box.provisioning_error
        self.login_check = self.fleet_box.login_check
        grid.addWidget(self.fleet_box.part, 2, 0, 1, 2)
        self.keyfile_box = KeyfileBox(self.form)
        self.keyfile_box.edited.connect(lambda: self._edited("keyfile"))
        self.fields.add("keyfile", self.keyfile_box.error, self.keyfile_box.check)
        # What the tests and the keyboard reach directly.
        self.keyfile_list, self.add_keyfile = self.keyfile_box.list, self.keyfile_box.add
        self.add_keyfiles = self.keyfile_box.add_files
        grid.addWidget(self.keyfile_box, 3, 0, 1, 2)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        grid.setRowStretch(4, 1)
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
        form = form_layout(group)
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
        self.key_edit.setPlaceholderText("the network's password")
        self.key_edit.setAccessibleName("Wi-Fi key")
        self.key_error = self._row(form, "&Key:", self.key_edit, "key", self._check_key)
        self.open_check = QCheckBox("O&pen network (no password)", group)
        self.open_check.toggled.connect(self._open_toggled)
        self.hidden_check = QCheckBox("&Hidden network", group)
        checks = QHBoxLayout()
        checks.addWidget(self.open_check)
        checks.addWidget(self.hidden_check)
        checks.addStretch(1)
        form.addRow("", checks)
        self.wifi_widgets: list[QWidget] = [
            self.ssid_edit,
            self.key_edit,
            self.open_check,
            self.hidden_check,
        ]
        self.ethernet_radio.toggled.connect(self._network_changed)
        return group

    def _ip_group(self) -> QWidget:
        group, part, body = expander("Static I&P address (IPv4)", self.form)
        self.ip_group = group
        form, right = two_forms(body)
        self.address_edit = QLineEdit(body)
        self.address_edit.setPlaceholderText("192.168.1.50")
        self.address_error = self._row(
            form,
            "&Address:",
            self.address_edit,
            "address",
            lambda: validate_ipv4_address(self.address_edit.text()),
        )
        self.netmask_edit = QLineEdit(body)
        self.netmask_edit.setPlaceholderText("255.255.255.0 or 24")
        self.netmask_error = self._row(
            right,
            "Net&mask:",
            self.netmask_edit,
            "netmask",
            lambda: validate_netmask(self.netmask_edit.text()),
        )
        self.gateway_edit = QLineEdit(body)
        self.gateway_edit.setPlaceholderText("192.168.1.1")
        self.gateway_error = self._row(
            form, "&Gateway:", self.gateway_edit, "gateway", self._check_gateway
        )
        self.dns_edit = QLineEdit(body)
        self.dns_edit.setPlaceholderText("1.1.1.1, 8.8.8.8")
        self.dns_error = self._row(
            right,
            "DNS ser&vers:",
            self.dns_edit,
            "dns",
            lambda: validate_dns(parse_dns(self.dns_edit.text())),
        )
        group.toggled.connect(lambda _on: self._edited("static"))
        return part

    def _device_group(self) -> QGroupBox:
        group = QGroupBox("Device", self.form)
        form = form_layout(group)
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

    def _row(
        self,
        form: QFormLayout,
        label: str,
        editor: QWidget,
        key: str,
        check: Callable[[], object],
        signal: str = "textChanged",
    ) -> FieldError:
        # The error spans the row (label and field), so most rules fit its one reserved line.
        parent = editor.parentWidget()
        error = FieldError(parent)
        title = QLabel(label, parent)
        title.setBuddy(editor)
        form.addRow(title, editor)
        form.addRow(error.in_reserved_line(parent))
        self.fields.add(key, error, check)
        getattr(editor, signal).connect(lambda *_args: self._edited(key))
        return error

    # --- values -------------------------------------------------------------------------------

    def hostname_text(self) -> str | None:
        return self.hostname_edit.text().strip() or None

    def _check_gateway(self) -> None:
        check_gateway(self.address_edit.text(), self.netmask_edit.text(), self.gateway_edit.text())

    def _check_key(self) -> None:
        """An empty key is an open network only when the user said so: a key that was not
        remembered must not flash an open network silently."""
        if self.open_check.isChecked():
            return
        key = self.key_edit.text()
        if not key:
            if self._key_forgotten:
                raise ConfigError(
                    "wifi_key",
                    f"for “{self.ssid_edit.text()}” was not remembered: type it again, or tick "
                    "“Open network” if it has no password",
                )
            raise ConfigError(
                "wifi_key",
                "is required: type the network's password, or tick “Open network” if it has none",
            )
        validate_wifi_key(Secret(key))

    def _open_toggled(self, on: bool) -> None:
        if on:
            self.key_edit.clear()
        self.key_edit.setEnabled(not on and self.wifi_radio.isChecked())
        self._edited("key")

    def _network_changed(self) -> None:
        wifi = self.wifi_radio.isChecked()
        for widget in self.wifi_widgets:
            widget.setEnabled(wifi)
        self.key_edit.setEnabled(wifi and not self.open_check.isChecked())
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
        self.fields.set_active("fleet", self.fleet_box.chosen)
        self.fields.set_active(
            "provisioning", self.fleet_box.chosen and not self.fleet_box.uses_login
        )
        self.fields.touch(key)
        if key in ("address", "netmask"):
            self.fields.touch_if_shown("gateway")
        self.fields.refresh()
        self.general_error.show_error(None)
        self.changed.emit()

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
        # Logged in and no key kept: the login is the easy way.
        self.login_check.setChecked(not settings.provisioning_key)
        self._key_forgotten = bool(settings.wifi_ssid) and not settings.wifi_key
        # Restored values are judged when the user edits them or moves on, not at start; a
        # Wi-Fi key that was not remembered is asked for at once.
        self.fields.clear_touched()
        if wifi and self._key_forgotten:
            self.fields.touch("key")
            self.fields.refresh()

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
        return self.blocker() is None

    def blocker(self) -> str | None:
        """Why Next would refuse, in the words shown under the field; None when it would not."""
        if not self.configure_check.isChecked():
            return None
        problem = self.fields.first_problem()
        if problem is not None:
            return problem
        try:
            self.config()
        except ConfigError as err:
            key = field_key(err.field)
            return error_text(key, err) if key else str(err)
        return None

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
        if wifi:
            self._check_key()
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
            open_network=wifi and self.open_check.isChecked(),
        )
        fleet = self.fleet_group.isChecked()
        config = DeviceConfig(
            device_type=selection.device_type,
            os_version=selection.os_version,
            fleet_id=parse_fleet_id(self.fleet_edit.text()) if fleet else None,
            provisioning_key=self.fleet_box.provisioning_key(),
            network=network,
            poll_interval_min=self.poll_spin.value() or None,
            hostname=self.hostname_text(),
            development_mode=self.dev_check.isChecked(),
            persistent_logging=self.logging_check.isChecked(),
            extra_keyfiles=tuple(self.keyfile_box.keyfiles),
            api_url=self._api_url,
        )
        validate_device_config(config, expect_remote_config=self.fleet_box.uses_login)
        return config

    def summary(self) -> str:
        try:
            return config_summary(self.config())
        except ConfigError:
            return ""

    def remember_secrets(self) -> bool:
        return self.remember_check.isChecked()

    def focus_first(self) -> None:
        (self.ssid_edit if self.wifi_radio.isChecked() else self.ethernet_radio).setFocus()
