"""NetworkManager keyfiles for balenaOS: the GKeyFile syntax, NM's SSID encoding, and the files
Flasher places in the boot partition's `system-connections/` (Wi-Fi, static IPv4, user files).

Pure: no I/O. Imports only the standard library and flasher.models (never flasher.validation,
which imports this module). `render_keyfiles` expects a config that passed
`flasher.validation.validate_device_config`.

Syntax follows GLib's GKeyFile as NetworkManager uses it:
* Lines: `# comment`, blank, `[group]` (trailing blanks allowed), `key=value`. Blanks around
  the key and before the value are dropped; trailing blanks of a value are kept.
* Value escapes: `\\s` (space), `\\t`, `\\n`, `\\r`, `\\\\`; in lists also `\\;`. Writing escapes
  only leading spaces and tabs, newlines, carriage returns and backslashes, as GLib does.
* SSIDs: NM writes an SSID made only of printable ASCII as a string with `;` escaped as `\\;`
  (so "12;34;" cannot pass for a byte list); any other SSID as a byte list `67;97;102;195;169;`.
  Non-ASCII UTF-8 names therefore become byte lists, exactly as NM's own writer produces them.

`hidden=`: `balena os configure` (and the API's image maker) always write `hidden=true`, which
also joins visible networks. Flasher writes it only for a network marked hidden, on purpose: a
hidden profile makes NetworkManager send probe requests naming the SSID wherever the device is,
announcing its home network to anyone listening, while a visible network is found by an ordinary
scan either way. A Wi-Fi profile without a key is an open network, which the settings only allow
when it was asked for (`NetworkSettings.open_network`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from flasher.models import DeviceConfig, Keyfile, NetworkKind, NetworkSettings, StaticIPv4

WIFI_KEYFILE_NAME = "resin-wifi"
ETHERNET_KEYFILE_NAME = "balena-ethernet"

# GLib's g_ascii_isspace set, which GKeyFile uses to trim keys and values.
_ASCII_SPACE = " \t\n\v\f\r"
_STRING_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
_GROUP_NAME_FORBIDDEN = re.compile(r"[\[\]\x00-\x1f\x7f]")
# GLib accepts spaces inside a key but not at either end, and an optional [locale] suffix.
_KEY_NAME = re.compile(r"[^=\[\] ](?:[^=\[\]]*[^=\[\] ])?(?:\[[\w.@-]+\])?")
_DIGITS = frozenset("0123456789")

# A group is an ordered list of (key, raw value) pairs; a document is an ordered list of groups.
Group = tuple[str, Sequence[tuple[str, str]]]


class KeyfileSyntaxError(ValueError):
    """A keyfile that GKeyFile or NetworkManager would refuse. The message never quotes content
    (a line may hold a password); `line` is 1-based, 0 when the problem is not on one line."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}" if line else problem)
        self.line = line
        self.problem = problem


def escape_value(text: str) -> str:
    """A string as GLib's g_key_file_set_string stores it (the inverse of `unescape_value`)."""
    return _escape(text, list_separator=False)


def escape_list(items: Sequence[str]) -> str:
    """A string list as g_key_file_set_string_list stores it: each item ends with `;`."""
    return "".join(_escape(item, list_separator=True) + ";" for item in items)


def _escape(text: str, *, list_separator: bool) -> str:
    out: list[str] = []
    leading = True
    for ch in text:
        if ch == " " and leading:
            out.append("\\s")
        elif ch == "\t" and leading:
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\\":
            out.append("\\\\")
            leading = False
        elif ch == ";" and list_separator:
            out.append("\\;")
            # GLib restarts leading-blank escaping after a separator: the next item starts there.
            leading = True
        else:
            out.append(ch)
            if ch not in " \t":
                leading = False
    return "".join(out)


def unescape_value(raw: str) -> str:
    """A stored value read as a string, as g_key_file_get_string does (`\\;` is an error there)."""
    return _unescape(raw, list_separator=False)[0]


def unescape_list(raw: str) -> list[str]:
    """A stored value read as a `;`-separated list, as g_key_file_get_string_list does."""
    return _unescape(raw, list_separator=True)


def _unescape(raw: str, *, list_separator: bool) -> list[str]:
    items: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            if i + 1 == len(raw):
                raise ValueError("escape character at end of value")
            nxt = raw[i + 1]
            if nxt in _STRING_ESCAPES:
                current.append(_STRING_ESCAPES[nxt])
            elif nxt == ";" and list_separator:
                current.append(";")
            else:
                raise ValueError(f"invalid escape sequence \\{nxt}")
            i += 2
            continue
        if ch == ";" and list_separator:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    if current or not list_separator:
        items.append("".join(current))
    return items


def encode_ssid(ssid: bytes) -> str:
    """The stored `ssid=` value NetworkManager's keyfile writer produces for these bytes."""
    if ssid and all(0x20 <= b <= 0x7E for b in ssid):
        return escape_value(ssid.decode("ascii").replace(";", "\\;"))
    return "".join(f"{b};" for b in ssid)


def decode_ssid(raw: str) -> bytes:
    """The SSID bytes NetworkManager's keyfile reader gets from a stored `ssid=` value."""
    text = unescape_value(raw)
    if text and all(c in _ASCII_SPACE or c in _DIGITS or c == ";" for c in text):
        as_list = _byte_list(text)
        if as_list is not None:
            return as_list
    # A plain string; `\;` was written to keep strings such as "12;34;" from reading as bytes.
    return re.sub(r"\\;", ";", text).encode("utf-8")


def _byte_list(text: str) -> bytes | None:
    """`1;2;3;` as NM parses it (blanks allowed around numbers), or None if it is not one."""
    parts = text.split(";")
    if parts[-1].strip(_ASCII_SPACE):
        return None
    values: list[int] = []
    for part in parts[:-1]:
        digits = part.strip(_ASCII_SPACE)
        if not digits or not set(digits) <= _DIGITS or len(digits) > 3 or int(digits) > 255:
            return None
        values.append(int(digits))
    return bytes(values) if values else None


def parse_keyfile(data: bytes) -> dict[str, dict[str, str]]:
    """Groups of `key: raw value` in file order; values keep their escapes (see `unescape_value`).

    Stricter than GLib in two ways, because both hide mistakes: a repeated group or a repeated key
    in one group is an error (GLib merges groups and keeps the last value).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        bad_line = data[: err.start].count(b"\n") + 1
        raise KeyfileSyntaxError(bad_line, "is not valid UTF-8") from None
    groups: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if number < len(lines) and line.endswith("\r"):
            line = line[:-1]
        stripped = line.lstrip(_ASCII_SPACE)
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") and "]" in stripped:
            name, _, rest = stripped[1:].partition("]")
            if rest.strip(" \t"):
                raise KeyfileSyntaxError(number, "text after the closing ']' of a group")
            if not name or _GROUP_NAME_FORBIDDEN.search(name):
                raise KeyfileSyntaxError(number, "invalid group name")
            if name in groups:
                raise KeyfileSyntaxError(number, f"group [{name}] appears twice")
            current = groups[name] = {}
            continue
        key, equals, value = stripped.partition("=")
        if not equals or not key:
            raise KeyfileSyntaxError(number, "not a [group], key=value pair or # comment")
        if current is None:
            raise KeyfileSyntaxError(number, "a key=value pair comes before the first [group]")
        key = key.rstrip(_ASCII_SPACE)
        if not _KEY_NAME.fullmatch(key):
            raise KeyfileSyntaxError(number, "invalid key name")
        if key in current:
            raise KeyfileSyntaxError(number, f"key '{key}' appears twice in its group")
        value = value.lstrip(_ASCII_SPACE)
        try:
            _unescape(value, list_separator=True)
        except ValueError as err:
            raise KeyfileSyntaxError(number, f"value of '{key}': {err}") from None
        current[key] = value
    return groups


def format_keyfile(groups: Sequence[Group]) -> bytes:
    """Groups of escaped values as keyfile text: a blank line between groups, a final newline."""
    blocks = []
    for name, pairs in groups:
        lines = [f"[{name}]", *(f"{key}={value}" for key, value in pairs)]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks).encode("utf-8")


def netmask_prefix(netmask: str) -> int:
    """The prefix length of a netmask given as "24" or "255.255.255.0"; ValueError if neither,
    or if the dotted mask is not contiguous ("255.0.255.0") or looks like a host mask."""
    if netmask and set(netmask) <= _DIGITS:
        prefix = int(netmask)
        if len(netmask) > 2 or prefix > 32 or (len(netmask) > 1 and netmask[0] == "0"):
            raise ValueError("prefix length must be 0 to 32")
        return prefix
    octets = netmask.split(".")
    if len(octets) != 4 or not all(o and set(o) <= _DIGITS and len(o) <= 3 for o in octets):
        raise ValueError("not a netmask")
    if any(int(o) > 255 or (len(o) > 1 and o.startswith("0")) for o in octets):
        raise ValueError("not a netmask")
    mask = int.from_bytes(bytes(int(o) for o in octets), "big")
    inverted = ~mask & 0xFFFFFFFF
    if inverted & (inverted + 1):
        raise ValueError("netmask bits are not contiguous")
    return 32 - inverted.bit_length()


def _ipv4_groups(ipv4: StaticIPv4 | None) -> list[Group]:
    if ipv4 is None:
        return [("ipv4", [("method", "auto")])]
    prefix = netmask_prefix(ipv4.netmask)
    pairs = [("address1", f"{ipv4.address}/{prefix},{ipv4.gateway}")]
    if ipv4.dns:
        pairs.append(("dns", escape_list(ipv4.dns)))
    pairs += [("dns-search", ""), ("method", "manual")]
    return [("ipv4", pairs)]


_IPV6_AUTO: Group = ("ipv6", [("addr-gen-mode", "stable-privacy"), ("method", "auto")])


def wifi_keyfile(network: NetworkSettings) -> Keyfile:
    """`resin-wifi` in the balena CLI's layout.

    `hidden=true` only for a network marked hidden (see the module docstring for why balena's
    always-hidden profile is not copied). With no key the profile is an open network: no
    [wifi-security].
    """
    if not network.wifi_ssid:
        raise ValueError("a Wi-Fi keyfile needs an SSID")
    wifi = [("hidden", "true")] if network.hidden else []
    wifi += [("mode", "infrastructure"), ("ssid", encode_ssid(network.wifi_ssid.encode("utf-8")))]
    groups: list[Group] = [
        ("connection", [("id", WIFI_KEYFILE_NAME), ("type", "wifi")]),
        ("wifi", wifi),
    ]
    if network.wifi_key:
        psk = escape_value(network.wifi_key.reveal())
        groups.append(
            ("wifi-security", [("auth-alg", "open"), ("key-mgmt", "wpa-psk"), ("psk", psk)])
        )
    groups += [*_ipv4_groups(network.ipv4), _IPV6_AUTO]
    return Keyfile(WIFI_KEYFILE_NAME, format_keyfile(groups))


def ethernet_keyfile(ipv4: StaticIPv4) -> Keyfile:
    """A wired profile with a static IPv4 address, for any Ethernet interface.

    No `interface-name`: boards name their port eth0, end0 or enp1s0, and a profile bound to the
    wrong name would leave the device unreachable. Matching every wired device also stops NM from
    adding its automatic DHCP profile next to this one.
    """
    groups: list[Group] = [
        ("connection", [("id", ETHERNET_KEYFILE_NAME), ("type", "ethernet")]),
        ("ethernet", []),
        *_ipv4_groups(ipv4),
        _IPV6_AUTO,
    ]
    return Keyfile(ETHERNET_KEYFILE_NAME, format_keyfile(groups))


def generated_keyfile_name(network: NetworkSettings) -> str | None:
    """The name of the file `render_keyfiles` generates for these settings, if any."""
    if network.kind is NetworkKind.WIFI:
        return WIFI_KEYFILE_NAME
    return ETHERNET_KEYFILE_NAME if network.ipv4 is not None else None


def render_keyfiles(cfg: DeviceConfig) -> tuple[Keyfile, ...]:
    """The files for `system-connections/`: the generated profile (Wi-Fi, or static Ethernet;
    DHCP Ethernet needs none), then the user's extra keyfiles verbatim."""
    network = cfg.network
    generated: list[Keyfile] = []
    if network.kind is NetworkKind.WIFI:
        generated.append(wifi_keyfile(network))
    elif network.ipv4 is not None:
        generated.append(ethernet_keyfile(network.ipv4))
    return (*generated, *cfg.extra_keyfiles)
