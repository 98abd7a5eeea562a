"""The `flasher bench` command on real loop-device cards: JSON lines without secrets, consent to
erase, a hostname refused beside a template, the first Ctrl-C finishing the card being written,
the write options `flash` takes, and the boot check's line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flasher.bench.events import BenchEvent
from flasher.bench.report import ReportLog
from flasher.cli.main import main
from flasher.image.bmap import write_bmap
from tests.support.bench import (
    WAIT_S,
    Freezer,
    MiB,
    Recorder,
    Slots,
    _assert_card_holds,
    _card_bytes,
    _json_lines,
    _ready,
    _running,
    _station,
)
from tests.support.bootcheck import file_sha256, mtype
from tests.support.images import BuiltImage

WIFI_KEY = "bench-secret-passphrase"


@pytest.mark.root
def test_bench_command_flashes_a_card_and_prints_json_lines_without_secrets(
    slots: Slots,
    image: BuiltImage,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASHER_WIFI_KEY", WIFI_KEY)
    slot = slots.add()
    slots.insert(slot, _card_bytes(image))
    report = tmp_path / "cards.jsonl"
    code = main(
        [
            "--json",
            "bench",
            str(image.path),
            "--sha256",
            file_sha256(image.path),
            "--hostname-template",
            "kiosk-{n}",
            "--wifi-ssid",
            "Bench Net",
            "--slot",
            slot.path,
            "--bus",
            "loop",
            "--include-present",
            "--once",
            "1",
            "--yes",
            "--report",
            str(report),
        ]
    )
    captured = capsys.readouterr()
    events = _json_lines(captured.out)
    assert code == 0, events[-3:]
    kinds = [e["event"] for e in events]
    for kind in ("station_ready", "card_inserted", "card_result", "summary"):
        assert kind in kinds
    result = next(e for e in events if e["event"] == "card_result")
    assert (result["device"], result["hostname"], result["verified"]) == (
        slot.path,
        "kiosk-1",
        True,
    )
    assert any(e["event"] == "progress" and e.get("slot") == slot.path for e in events)
    assert events[-1] == {"event": "summary", "done": 1, "failed": 0, "report": str(report)}
    assert ReportLog(report).records()[0]["hostname"] == "kiosk-1"
    assert _assert_card_holds(slot, image, tmp_path)["hostname"] == "kiosk-1"
    keyfile = mtype(slot.backing, image.boot.start_bytes, "/system-connections/resin-wifi")
    assert WIFI_KEY.encode() in keyfile
    for text in (captured.out, captured.err, report.read_text()):
        assert WIFI_KEY not in text


def test_bench_command_needs_consent_to_erase_cards(
    image: BuiltImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--json", "bench", str(image.path), "--report", str(tmp_path / "r.jsonl")])
    (error,) = _json_lines(capsys.readouterr().out)
    assert code == 1 and error["event"] == "error"
    assert "--yes" in error["hint"]


def test_bench_command_refuses_hostname_with_a_template_before_any_io(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--json",
            "bench",
            str(tmp_path / "missing.img"),
            "--hostname",
            "one",
            "--hostname-template",
            "bench-{n}",
            "--yes",
        ]
    )
    (error,) = _json_lines(capsys.readouterr().out)
    assert code == 2 and error["code"] == "invalid_config"


@pytest.mark.root
def test_first_ctrl_c_lets_the_card_being_written_finish(
    slots: Slots, freezer: Freezer, image: BuiltImage, tmp_path: Path
) -> None:
    slot = freezer.slot()
    os.truncate(slot.backing, _card_bytes(image))
    report = tmp_path / "cards.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flasher",
            "--json",
            "bench",
            str(image.path),
            "--sha256",
            file_sha256(image.path),
            "--slot",
            slot.path,
            "--bus",
            "loop",
            "--yes",
            "--report",
            str(report),
            # The frozen filesystem must hold up the card's write, not the probe before it.
            "--no-probe-capacity",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines = iter(proc.stdout)
    try:
        _read_until(lines, lambda e: e["event"] == "station_ready")
        freezer.freeze()
        try:
            slots.insert(slot, _card_bytes(image), grow=False)
            _read_until(
                lines,
                lambda e: (
                    e["event"] == "phase" and e["phase"] == "writing" and e["target"] == slot.path
                ),
            )
            proc.send_signal(signal.SIGINT)
            _read_until(lines, lambda e: e["event"] == "log" and "no more cards" in e["message"])
        finally:
            freezer.thaw()
        rest, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = _json_lines(rest)
    assert proc.returncode == 130, (events[-3:], err)
    (result,) = [e for e in events if e["event"] == "card_result"]
    assert (result["ok"], result["verified"]) == (True, True)
    assert events[-1] == {"event": "summary", "done": 1, "failed": 0, "report": str(report)}


def _read_until(lines: Iterator[str], matches: Callable[[dict[str, Any]], bool]) -> None:
    for line in lines:
        if matches(json.loads(line)):
            return
    raise AssertionError("the bench ended before the expected event")


@pytest.mark.root
@pytest.mark.parametrize("option", ["--write-all", "--bmap"])
def test_bench_takes_the_write_options_flash_takes_and_writes_what_flash_writes(
    slots: Slots,
    image: BuiltImage,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
) -> None:
    args = [option]
    if option == "--bmap":
        bmap = write_bmap(tmp_path / "image.bmap", [(0, 2 * MiB)], image.size_bytes)
        args.append(str(bmap))
    args += ["--sha256", file_sha256(image.path)]  # a raw image proves nothing on its own
    assert (
        main(["--json", "flash", str(image.path), "--target", str(tmp_path / "f.img"), *args]) == 0
    )
    flashed = _json_lines(capsys.readouterr().out)
    slot = slots.add()
    slots.insert(slot, _card_bytes(image))
    bench = ["--slot", slot.path, "--bus", "loop", "--include-present", "--once", "1", "--yes"]
    report = ["--report", str(tmp_path / "cards.jsonl")]
    assert main(["--json", "bench", str(image.path), *bench, *report, *args]) == 0
    benched = _json_lines(capsys.readouterr().out)
    flash_summary = next(e for e in flashed if e["event"] == "summary")
    flash_result = next(e for e in flashed if e["event"] == "target_result")
    ready = next(e for e in benched if e["event"] == "station_ready")
    card = next(e for e in benched if e["event"] == "card_result")
    assert ready["mapped_bytes"] == flash_summary["mapped_bytes"]
    assert card["bytes_written"] == flash_result["bytes_written"]
    assert card["verified"] and card["image_sha256"] == flash_summary["image_sha256"]
    if option == "--write-all":
        assert card["bytes_written"] == image.size_bytes
    else:
        assert card["bytes_written"] < image.size_bytes


def test_boot_check_adds_the_booted_device_to_the_card_line(
    slots: Slots, image: BuiltImage, tmp_path: Path
) -> None:
    from dataclasses import replace as _replace

    from flasher.bench.bootcheck import BootCheckSettings, boot_checker
    from flasher.bench.cardsteps import CardSteps
    from flasher.sandbox.devices import default_devices
    from flasher.sandbox.supervisor_fake import FakeSupervisor

    spec = _replace(default_devices()[0].spec, local_mode=True, api_key=None)
    slot = slots.add()
    recorder, report = Recorder[BenchEvent](), tmp_path / "cards.jsonl"
    with FakeSupervisor(spec) as device:
        settings = BootCheckSettings(f"{device.host}:{device.port}", 20, 0.1)
        steps = CardSteps(probe_capacity=False, after_card=boot_checker(settings))
        station = _station(image, [slot], recorder, report, card_limit=1, card_steps=steps)
        with _running(station) as (finish, _cancel):
            recorder.wait_for(_ready, "station ready")
            slots.insert(slot, _card_bytes(image))
            finish()
    (record,) = ReportLog(report).records()
    assert record["ok"] is True
    boot = record["boot"]
    assert (boot["up"], boot["device_type"], boot["os_version"], boot["problem"]) == (
        True,
        image.device_type,
        "balenaOS 6.5.50+rev8",
        None,
    )
    assert boot["first_ping_s"] is not None
