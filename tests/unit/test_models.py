"""Secrets stay hidden in every textual form; errors carry structured, JSON-ready fields."""

from __future__ import annotations

import importlib
import json
import pickle
from collections import Counter
from collections.abc import Sequence

import pytest

from flasher.errors import (
    ERROR_CLASSES,
    ConfigError,
    FlasherError,
    ImageError,
    VerificationFailed,
)
from flasher.models import DeviceConfig, NetworkKind, NetworkSettings, Secret

KEY = "hunter2-correct-horse"


def test_secret_is_redacted_in_repr_and_str() -> None:
    secret = Secret(KEY)
    assert KEY not in repr(secret)
    assert KEY not in str(secret)
    assert KEY not in f"{secret}"
    assert secret.reveal() == KEY


def test_secret_cannot_be_pickled() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(Secret(KEY))


def test_device_config_repr_hides_the_wifi_key_and_provisioning_key() -> None:
    cfg = DeviceConfig(
        device_type="raspberrypi4-64",
        provisioning_key=Secret("prov-" + KEY),
        network=NetworkSettings(NetworkKind.WIFI, "Lab", Secret(KEY)),
    )
    assert KEY not in repr(cfg)


def test_config_error_names_field_and_rule() -> None:
    err = ConfigError("wifi_ssid", "must be 1-32 bytes")
    assert str(err) == "wifi_ssid: must be 1-32 bytes"
    assert err.to_dict()["details"] == {"field": "wifi_ssid", "rule": "must be 1-32 bytes"}
    assert err.exit_code == 2


def test_error_dicts_are_json_ready() -> None:
    err = ImageError("x.img", "truncated gzip stream", problem="truncated", hint="re-download")
    data = json.loads(json.dumps(err.to_dict()))
    assert data["code"] == "image"
    assert data["details"]["problem"] == "truncated"
    assert data["hint"] == "re-download"


def _error_classes() -> list[type[FlasherError]]:
    """Every FlasherError class, as a list (a dict keyed by code would hide a duplicate)."""
    importlib.import_module("flasher.balena.hup")  # defines its own error class
    found: list[type[FlasherError]] = [FlasherError]
    for cls in found:
        found.extend(cls.__subclasses__())
    return found


def _duplicate_codes(classes: Sequence[type[object]]) -> list[str]:
    codes = Counter(str(getattr(cls, "code", "")) for cls in classes)
    return sorted(code for code, count in codes.items() if count > 1)


def test_duplicate_codes_are_found_in_a_list() -> None:
    first = type("First", (), {"code": "image"})
    second = type("Second", (), {"code": "image"})
    other = type("Other", (), {"code": "drive"})
    assert _duplicate_codes([first, other, second]) == ["image"]


def test_error_codes_are_unique() -> None:
    assert _duplicate_codes(_error_classes()) == []


def test_every_registered_code_names_its_class() -> None:
    for cls in _error_classes():
        assert ERROR_CLASSES.get(cls.code, cls) is cls


def test_exit_codes_follow_the_design() -> None:
    assert VerificationFailed("x").exit_code == 3
