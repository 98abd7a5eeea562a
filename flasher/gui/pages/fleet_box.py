"""The Configure page's fleet part: the fleet ID and either a provisioning key or, when a balena
login is saved, the offer to use it instead (the balena API then creates the provisioning key and
the fleet's config.json at flash time, as `flasher flash --fleet` does when logged in).

Imports Qt widgets, the page's field helpers and the core's validators only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from PySide6.QtWidgets import QCheckBox, QFormLayout, QLineEdit, QWidget

from flasher.errors import ConfigError
from flasher.gui.pages.fields import parse_fleet_id
from flasher.gui.widgets import FieldError, SecretEdit, expander, two_forms
from flasher.models import Secret
from flasher.validation import validate_provisioning_key

LOGIN_CHOICE = "Use my balena &login instead (the API creates a key)"


class AddRow(Protocol):
    """The page's way to add a checked field: label, editor and the error line under them."""

    def __call__(
        self, form: QFormLayout, label: str, editor: QWidget, key: str, check: Callable[[], object]
    ) -> FieldError: ...


class FleetBox:
    """The fleet expander's widgets and values; `part` goes into the page's layout."""

    def __init__(
        self, parent: QWidget, add_row: AddRow, edited: Callable[[str], None], *, has_login: bool
    ) -> None:
        self.has_login = has_login
        self.group, self.part, body = expander("Register in a &fleet (optional)", parent)
        form, right = two_forms(body)
        self.fleet_edit = QLineEdit(body)
        self.fleet_edit.setPlaceholderText("numeric ID from the dashboard URL")
        self.fleet_error = add_row(
            form,
            "Fl&eet ID:",
            self.fleet_edit,
            "fleet",
            lambda: parse_fleet_id(self.fleet_edit.text()),
        )
        self.provisioning_edit = SecretEdit(body)
        self.provisioning_error = add_row(
            right, "Provisioning ke&y:", self.provisioning_edit, "provisioning", self.check_key
        )
        self.login_check = QCheckBox(LOGIN_CHOICE, body)
        self.login_check.setToolTip(
            "Flasher asks the balena API, with the login saved on this computer, for the "
            "fleet's settings and a new provisioning key when the cards are written."
        )
        self.login_check.setVisible(has_login)
        right.addRow(self.login_check)
        self.login_check.toggled.connect(self._login_toggled)
        self.group.toggled.connect(lambda _on: edited("fleet_group"))
        self._edited = edited

    @property
    def chosen(self) -> bool:
        return self.group.isChecked()

    @property
    def uses_login(self) -> bool:
        """The API makes the provisioning key: the key field is not needed."""
        return self.chosen and self.has_login and self.login_check.isChecked()

    def provisioning_key(self) -> Secret | None:
        if not self.chosen or self.uses_login:
            return None
        text = self.provisioning_edit.text().strip()
        return Secret(text) if text else None

    def check_key(self) -> None:
        if self.uses_login:
            return
        key = self.provisioning_key()
        if key is None:
            instead = (
                ", or tick “Use my balena login instead”"
                if self.has_login
                else ", or log in to balena on this computer so that Flasher can create one"
            )
            raise ConfigError(
                "provisioning_key",
                "is required to register in a fleet: copy one from the fleet's page in the "
                f"balena dashboard (Add device){instead}",
            )
        validate_provisioning_key(key, 1)

    def _login_toggled(self, on: bool) -> None:
        self.provisioning_edit.setEnabled(not (on and self.has_login))
        self._edited("provisioning")
