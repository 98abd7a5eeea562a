"""NetworkManager keyfiles: GKeyFile escaping and parsing, NM's SSID encoding, the generated
profiles (byte-exact golden files), all cross-checked with NetworkManager's own libnm reader and
writer through GObject introspection when the system has them."""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from flasher.image.network import (
    KeyfileSyntaxError,
    decode_ssid,
    encode_ssid,
    escape_list,
    escape_value,
    netmask_prefix,
    parse_keyfile,
    render_keyfiles,
    unescape_list,
    unescape_value,
)
from flasher.models import DeviceConfig, Keyfile, NetworkKind, NetworkSettings, Secret, StaticIPv4

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SYSTEM_PYTHON = "/usr/bin/python3"
PSK = "s3cret pass"

TRICKY_TEXTS = [
    "plain",
    "with space",
    " leading space",
    "  two leading",
    "trailing space ",
    "\tleading tab",
    "semi;colon",
    "back\\slash",
    "back\\;both",
    "line\nbreak",
    "carriage\rreturn",
    "equals=and#hash",
    "Café ☕ ünïcode",
    "",
    " ",
    "\\",
]

TRICKY_SSIDS = [
    "My Home Net",
    "a;b",
    "a\\;b",
    "12;34;",
    "1234",
    "12 ",
    " lead",
    "trail ",
    "#hash",
    "key=value",
    "x\\y",
    "Café",
    "日本語のネットワーク",
    "tab\there",
    ";",
    "\\",
]


def _wifi(ssid: str = "My Home Net", key: str | None = PSK, **extra: Any) -> DeviceConfig:
    network = NetworkSettings(
        NetworkKind.WIFI, ssid, Secret(key) if key is not None else None, **extra
    )
    return DeviceConfig("raspberrypi4-64", network=network)


STATIC = StaticIPv4("192.168.1.50", "255.255.255.0", "192.168.1.1", ("8.8.8.8", "1.1.1.1"))

GOLDEN_CASES = {
    "keyfile-wifi": _wifi(),
    "keyfile-wifi-hidden": _wifi(hidden=True),
    "keyfile-wifi-open": _wifi("Cafe Guest", None),
    "keyfile-wifi-static": _wifi(ipv4=STATIC),
    "keyfile-wifi-unicode": _wifi("Café;2G", " leading-space key"),
    "keyfile-ethernet-static": DeviceConfig(
        "raspberrypi4-64", network=NetworkSettings(NetworkKind.ETHERNET, ipv4=STATIC)
    ),
}


# --- GKeyFile escaping ------------------------------------------------------------------------


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_escape_then_unescape_value_round_trips(text: str) -> None:
    assert unescape_value(escape_value(text)) == text


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_escaped_value_is_one_line_that_survives_parsing(text: str) -> None:
    data = f"[g]\nk={escape_value(text)}\n".encode()
    assert unescape_value(parse_keyfile(data)["g"]["k"]) == text


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        (" a b", "\\sa b"),
        ("a b ", "a b "),
        ("\t x", "\\t\\sx"),
        ("a\\b", "a\\\\b"),
        ("a;b", "a;b"),
        ("a\nb\r", "a\\nb\\r"),
    ],
)
def test_escape_value_writes_what_glib_writes(text: str, stored: str) -> None:
    assert escape_value(text) == stored


@pytest.mark.parametrize(
    "items",
    [["8.8.8.8", "1.1.1.1"], ["a;b", "c"], [" x", "y "], ["back\\slash"], [""], []],
)
def test_escape_list_then_unescape_list_round_trips(items: list[str]) -> None:
    assert unescape_list(escape_list(items)) == items


def test_list_items_end_with_a_separator() -> None:
    assert escape_list(["8.8.8.8", "1.1.1.1"]) == "8.8.8.8;1.1.1.1;"


@pytest.mark.parametrize("raw", ["a\\;b", "a\\x", "end\\"])
def test_unescape_value_rejects_what_glib_rejects(raw: str) -> None:
    with pytest.raises(ValueError):
        unescape_value(raw)


# --- SSIDs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ssid", TRICKY_SSIDS)
def test_ssid_encoding_round_trips_through_nm_reading_rules(ssid: str) -> None:
    raw = ssid.encode("utf-8")
    assert decode_ssid(encode_ssid(raw)) == raw


@pytest.mark.parametrize(
    ("ssid", "stored"),
    [
        (b"My Home Net", "My Home Net"),
        (b"a;b", "a\\\\;b"),
        (b"12;34;", "12\\\\;34\\\\;"),
        (b" lead", "\\slead"),
        ("Café".encode(), "67;97;102;195;169;"),
        (b"tab\there", "116;97;98;9;104;101;114;101;"),
    ],
)
def test_ssid_is_a_string_when_printable_ascii_else_a_byte_list(ssid: bytes, stored: str) -> None:
    assert encode_ssid(ssid) == stored


@pytest.mark.parametrize(
    ("stored", "ssid"),
    [("72;105;", b"Hi"), (" 72 ; 105 ;", b"Hi"), ("72;105", b"72;105"), ("1234;", b"1234;")],
)
def test_decode_ssid_reads_byte_lists_only_when_well_formed(stored: str, ssid: bytes) -> None:
    assert decode_ssid(stored) == ssid


# --- parsing ----------------------------------------------------------------------------------


def test_parse_keeps_groups_keys_and_raw_values_in_order() -> None:
    data = (
        b"# comment\n\n[connection]\n  id = resin-wifi\ntype=wifi\r\n"
        b"[wifi]  \nssid=a\\\\;b \nmode=\n"
    )
    assert parse_keyfile(data) == {
        "connection": {"id": "resin-wifi", "type": "wifi"},
        "wifi": {"ssid": "a\\\\;b ", "mode": ""},
    }


@pytest.mark.parametrize(
    ("data", "line", "problem"),
    [
        (b"[a]\nx=1\n[a]\n", 3, "group [a] appears twice"),
        (b"[a]\nx=1\nx=2\n", 3, "key 'x' appears twice"),
        (b"x=1\n[a]\n", 1, "before the first [group]"),
        (b"[a]\npsk=s3cret\\q\n", 2, "invalid escape"),
        (b"[a]\npsk=s3cret\\\n", 2, "escape character at end"),
        (b"[a]\nthis is not a pair\n", 2, "not a [group]"),
        (b"[a]\n=value\n", 2, "not a [group]"),
        (b"[a]\n k[x =1\n", 2, "invalid key name"),
        (b"[a]b\n", 1, "text after the closing"),
        (b"[]\n", 1, "invalid group name"),
        (b"[a]\nssid=\xff\xfe\n", 2, "not valid UTF-8"),
    ],
)
def test_parse_reports_the_line_and_problem(data: bytes, line: int, problem: str) -> None:
    with pytest.raises(KeyfileSyntaxError) as caught:
        parse_keyfile(data)
    assert caught.value.line == line
    assert problem in str(caught.value)


def test_parse_errors_never_quote_the_line() -> None:
    with pytest.raises(KeyfileSyntaxError) as caught:
        parse_keyfile(b"[wifi-security]\npsk=hunter2\\q\n")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("netmask", "prefix"),
    [("24", 24), ("0", 0), ("32", 32), ("255.255.255.0", 24), ("255.255.252.0", 22),
     ("0.0.0.0", 0), ("255.255.255.255", 32)],
)  # fmt: skip
def test_netmask_prefix_accepts_prefixes_and_contiguous_masks(netmask: str, prefix: int) -> None:
    assert netmask_prefix(netmask) == prefix


@pytest.mark.parametrize(
    "netmask", ["33", "024", "-1", "255.0.255.0", "0.0.0.255", "255.255.255", "256.0.0.0", ""]
)
def test_netmask_prefix_rejects_other_text(netmask: str) -> None:
    with pytest.raises(ValueError):
        netmask_prefix(netmask)


# --- generated profiles -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_generated_keyfile_matches_golden_bytes(name: str) -> None:
    (keyfile,) = render_keyfiles(GOLDEN_CASES[name])
    assert keyfile.content == (GOLDEN / name).read_bytes()


def test_hidden_wifi_keyfile_is_the_balena_cli_layout() -> None:
    # `balena os configure` (CLI 22.5.5) wrote exactly these bytes for this network, without a
    # final newline; its template always says hidden=true.
    cli_bytes = (
        b"[connection]\nid=resin-wifi\ntype=wifi\n\n[wifi]\nhidden=true\nmode=infrastructure\n"
        b"ssid=My Home Net\n\n[wifi-security]\nauth-alg=open\nkey-mgmt=wpa-psk\npsk=s3cret pass"
        b"\n\n[ipv4]\nmethod=auto\n\n[ipv6]\naddr-gen-mode=stable-privacy\nmethod=auto"
    )
    (keyfile,) = render_keyfiles(_wifi(hidden=True))
    assert keyfile.content == cli_bytes + b"\n"


def test_dhcp_ethernet_needs_no_keyfile() -> None:
    assert render_keyfiles(DeviceConfig("raspberrypi4-64")) == ()


def test_extra_keyfiles_follow_the_generated_one_verbatim() -> None:
    extra = Keyfile("cellular-extra", b"[connection]\nid=cell\ntype=gsm\n# kept as is")
    (generated, copied) = render_keyfiles(
        DeviceConfig("raspberrypi4-64", network=_wifi().network, extra_keyfiles=(extra,))
    )
    assert generated.name == "resin-wifi"
    assert copied == extra


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_generated_keyfile_parses_with_our_parser(name: str) -> None:
    (keyfile,) = render_keyfiles(GOLDEN_CASES[name])
    groups = parse_keyfile(keyfile.content)
    assert groups["connection"]["id"] == keyfile.name


# --- NetworkManager itself --------------------------------------------------------------------

_NM_SCRIPT = r"""
import json, sys
import gi
gi.require_version("NM", "1.0")
from gi.repository import GLib, NM

def read(path):
    warnings = []
    def handler(keyfile, connection, handler_type, data, user_data):
        if handler_type == NM.KeyfileHandlerType.WARN:
            warnings.append(data.warn_get()[0])
        return False
    kf = GLib.KeyFile()
    kf.load_from_file(path, GLib.KeyFileFlags.NONE)
    con = NM.keyfile_read(kf, "/", NM.KeyfileHandlerFlags.NONE, handler, None)
    s_con = con.get_setting_connection()
    # As NetworkManager's keyfile plugin does for a file without a uuid.
    if not s_con.get_uuid():
        s_con.set_property("uuid", NM.utils_uuid_generate())
    con.normalize()
    out = {"warnings": warnings, "id": con.get_id(), "type": con.get_connection_type()}
    try:
        out["verified"] = con.verify()
    except GLib.Error as err:
        out["verified"] = err.message
    wifi = con.get_setting_wireless()
    if wifi is not None:
        out["ssid_hex"] = bytes(wifi.get_ssid().get_data()).hex()
        out["hidden"] = wifi.get_hidden()
    sec = con.get_setting_wireless_security()
    out["psk"] = sec.get_psk() if sec is not None else None
    ip4 = con.get_setting_ip4_config()
    out["ipv4_method"] = ip4.get_method()
    out["addresses"] = [
        f"{a.get_address()}/{a.get_prefix()}"
        for a in (ip4.get_address(i) for i in range(ip4.get_num_addresses()))
    ]
    out["gateway"] = ip4.get_gateway()
    out["dns"] = [ip4.get_dns(i) for i in range(ip4.get_num_dns())]
    return out

def write_ssid(ssid_hex):
    con = NM.SimpleConnection.new()
    s_con = NM.SettingConnection.new()
    s_con.set_property("id", "x")
    s_con.set_property("uuid", NM.utils_uuid_generate())
    s_con.set_property("type", "802-11-wireless")
    wifi = NM.SettingWireless.new()
    wifi.set_property("ssid", GLib.Bytes.new(bytes.fromhex(ssid_hex)))
    con.add_setting(s_con)
    con.add_setting(wifi)
    con.normalize()
    kf = NM.keyfile_write(con, NM.KeyfileHandlerFlags.NONE, None, None)
    return kf.get_value("wifi", "ssid")

def glib_values(path):
    kf = GLib.KeyFile()
    kf.load_from_file(path, GLib.KeyFileFlags.NONE)
    groups = kf.get_groups()[0]
    return {g: {k: kf.get_value(g, k) for k in kf.get_keys(g)[0]} for g in groups}

mode, args = sys.argv[1], sys.argv[2:]
if mode == "read":
    print(json.dumps([read(p) for p in args]))
elif mode == "write-ssid":
    print(json.dumps([write_ssid(h) for h in args]))
else:
    print(json.dumps([glib_values(p) for p in args]))
"""


@cache
def _nm_unavailable() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('NM', '1.0')"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return "libnm introspection missing (apt-get install python3-gi gir1.2-nm-1.0)"
    return None


def _run_nm(mode: str, args: list[str]) -> list[Any]:
    reason = _nm_unavailable()
    if reason:
        pytest.skip(reason)
    # Secrets stay in the files; argv only carries paths (and SSIDs, which are not secret).
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", _NM_SCRIPT, mode, *args],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"},
    )
    result: list[Any] = json.loads(done.stdout)
    return result


def _nm_read(tmp_path: Path, keyfile: Keyfile) -> dict[str, Any]:
    path = tmp_path / keyfile.name
    path.write_bytes(keyfile.content)
    path.chmod(0o600)
    (answer,) = _run_nm("read", [str(path)])
    assert isinstance(answer, dict)
    return answer


@pytest.mark.parametrize("ssid", TRICKY_SSIDS)
def test_networkmanager_reads_the_ssid_and_psk_we_meant(tmp_path: Path, ssid: str) -> None:
    psk = " spaced; \\ key "
    (keyfile,) = render_keyfiles(_wifi(ssid, psk))
    seen = _nm_read(tmp_path, keyfile)
    assert seen["warnings"] == []
    assert seen["verified"] is True
    assert bytes.fromhex(seen["ssid_hex"]) == ssid.encode("utf-8")
    assert seen["psk"] == psk


def test_networkmanager_writes_ssids_exactly_as_we_do() -> None:
    raws = [s.encode("utf-8") for s in TRICKY_SSIDS]
    assert _run_nm("write-ssid", [r.hex() for r in raws]) == [encode_ssid(r) for r in raws]


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_networkmanager_accepts_each_generated_profile(tmp_path: Path, name: str) -> None:
    cfg = GOLDEN_CASES[name]
    (keyfile,) = render_keyfiles(cfg)
    seen = _nm_read(tmp_path, keyfile)
    network = cfg.network
    ipv4 = network.ipv4
    assert seen["warnings"] == []
    assert seen["verified"] is True
    assert seen["id"] == keyfile.name
    if network.kind is NetworkKind.WIFI:
        assert seen["type"] == "802-11-wireless"
        assert seen["hidden"] is network.hidden
        assert seen["psk"] == (network.wifi_key.reveal() if network.wifi_key else None)
    else:
        assert seen["type"] == "802-3-ethernet"
    if ipv4 is None:
        assert (seen["ipv4_method"], seen["addresses"]) == ("auto", [])
    else:
        prefix = netmask_prefix(ipv4.netmask)
        assert seen["ipv4_method"] == "manual"
        assert seen["addresses"] == [f"{ipv4.address}/{prefix}"]
        assert seen["gateway"] == ipv4.gateway
        assert seen["dns"] == list(ipv4.dns)


def test_glib_reads_the_same_raw_values_as_our_parser(tmp_path: Path) -> None:
    data = (
        b"# lead comment\n[connection]\nid = x y \ntype=wifi\n\n  [wifi]\t\n"
        b"ssid=a\\\\;b\\s\npsk= \\s two\nlist=a\\;b;c;\nempty=\n"
    )
    path = tmp_path / "doc"
    path.write_bytes(data)
    assert _run_nm("glib", [str(path)]) == [parse_keyfile(data)]
