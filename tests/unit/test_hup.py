"""Host OS update rules (balena-hup-action-utils): action types and the reasons for refusals."""

from __future__ import annotations

import pytest

from flasher.balena import hup

DEVICE = "raspberrypi4-64"


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("2.14.0+rev1.prod", "2.16.0+rev2.prod"),
        ("2.88.4", "6.5.50+rev8"),
        ("5.1.20", "2023.1.0"),
        ("2021.07.1.prod", "2022.1.0.prod"),
        ("2.14.0+rev1.prod", "2.29.2-1234+rev1"),
        ("2.80.3+rev1.dev", "6.5.50+rev8"),
        ("2.80.3+rev1.prod", "6.5.50+rev8"),
        ("6.5.50+rev7", "6.5.50+rev8"),
    ],
)
def test_balenahup_between_supported_versions(current: str, target: str) -> None:
    assert hup.get_hup_action_type(DEVICE, current, target) == "balenahup"
    assert hup.is_supported_os_update(DEVICE, current, target)


@pytest.mark.parametrize(
    ("current", "target", "rule"),
    [
        ("garbage", "2.16.0", "Invalid current balenaOS version"),
        ("2.16.0", "latest", "Invalid target balenaOS version"),
        (
            "2.14.0+rev1.prod",
            "2.16.0+rev1.dev",
            "Updates cannot be performed between development and production balenaOS variants",
        ),
        (
            "2.14.0+rev1.dev",
            "2.16.0+rev1.prod",
            "Updates cannot be performed between development and production balenaOS variants",
        ),
        ("2.13.0+rev1.prod", "2.16.0", "Current OS version must be >= 2.14.0+rev1"),
        ("2.14.0+rev1.dev", "2.16.0", "Current OS version must be >= 2.14.0+rev1"),
        ("2.14.0+rev1", "2.15.0", "Target OS version must be >= 2.16.0+rev1"),
        ("6.5.50+rev8", "6.5.50+rev7", "OS downgrades are not allowed"),
        ("2.29.2+rev1", "2.29.2-1234+rev2", "OS downgrades are not allowed"),
        ("6.5.50+rev8", "v6.5.50+rev8", "Current OS version matches Target OS version"),
    ],
)
def test_refusals_name_the_rule(current: str, target: str, rule: str) -> None:
    with pytest.raises(hup.OsUpdateError) as info:
        hup.get_hup_action_type(DEVICE, current, target)
    assert info.value.rule == rule
    assert info.value.details() == {
        "rule": rule,
        "current": current,
        "target": target,
        "device_type": DEVICE,
    }
    assert not hup.is_supported_os_update(DEVICE, current, target)


@pytest.mark.parametrize(
    ("device_type", "current", "target", "action"),
    [
        ("jetson-xavier", "5.3.21", "6.0.50", "takeover"),
        ("jetson-xavier", "6.0.50", "6.1.0", "balenahup"),
        ("jetson-xavier", "5.3.21", "6.0.49", "balenahup"),
        ("jetson-xavier-nx-devkit", "6.0.50", "6.0.50+rev1", "takeover"),
        ("jetson-xavier-nx-devkit", "6.0.50+rev1", "6.1.0", "balenahup"),
        ("jetson-xavier-nx-devkit-emmc", "6.0.38", "6.0.39", "takeover"),
        # The variant suffix is ignored, else 6.0.39.dev < 6.0.39 would take over again.
        ("jetson-xavier-nx-devkit-emmc", "6.0.39.dev", "6.0.40.dev", "balenahup"),
        ("raspberrypi4-64", "5.3.21", "6.0.50", "balenahup"),
    ],
)
def test_takeover_thresholds(device_type: str, current: str, target: str, action: str) -> None:
    assert hup.get_hup_action_type(device_type, current, target) == action
