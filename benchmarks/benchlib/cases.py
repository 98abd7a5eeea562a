"""The benchmark matrix: which commands run, on which source files, to how many loop devices.

Each Case builds its own argv from the image set and the devices of the run. Imports the
standard library only.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SOURCE_KINDS = ("raw", "zip", "gz", "xz", "zst")
BENCH_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ImageSet:
    """A raw image and the files made beside it by make_test_image.py (docs/performance.md):
    NAME.bmap, any of NAME.{zip,gz,xz,zst}, and a dense copy STEM-dense.SUFFIX.

    `dense_copy` names a dense copy made by the benchmark when the folder has none.
    """

    folder: Path
    name: str = "balena.img"
    dense_copy: Path | None = None

    @classmethod
    def of(cls, image: Path) -> ImageSet:
        """The set around one image file, whatever it is called."""
        return cls(image.parent, image.name)

    @property
    def sparse(self) -> Path:
        return self.folder / self.name

    @property
    def dense_name(self) -> str:
        path = Path(self.name)
        return f"{path.stem}-dense{path.suffix}"

    @property
    def dense(self) -> Path:
        given = self.folder / self.dense_name
        if self.dense_copy is not None and not given.is_file():
            return self.dense_copy
        return given

    @property
    def bmap(self) -> Path:
        return self.folder / f"{self.name}.bmap"

    def source(self, kind: str) -> Path:
        """What a user would download: the dense raw image, or a compressed file."""
        return self.dense if kind == "raw" else self.folder / f"{self.name}.{kind}"

    def missing(self) -> list[Path]:
        """The files every case needs: the raw image and its .bmap."""
        return [p for p in (self.sparse, self.bmap) if not p.is_file()]

    def absent_kinds(self) -> list[str]:
        """Compressed formats the folder lacks (their cases are left out)."""
        return [k for k in SOURCE_KINDS if k != "raw" and not self.source(k).is_file()]


@dataclass(frozen=True)
class Case:
    """One row of the results table."""

    tool: str  # "dd" | "bmaptool" | "flasher" | "decode"
    source: str  # one of SOURCE_KINDS
    targets: int = 1  # loop devices written; 0 for decode rows
    verify: bool = False  # flasher: read-back verify; bmaptool: checks the bmap's hashes
    image_cache: str = "fresh"  # flasher: "fresh" (empty cache) or "warm" (second card)
    decoder: str = ""  # decode rows: "lib" or "flasher"
    with_bmap: bool = False  # flasher: --bmap NAME.bmap instead of its own block map

    @property
    def sub_second(self) -> bool:
        """One card from a raw image or a warm cache: well under a second here, where this disk's
        run-to-run spread is wider than the differences the goals ask about."""
        one_card = self.targets == 1 and self.tool in ("bmaptool", "flasher")
        return one_card and (self.source == "raw" or self.image_cache == "warm")

    @property
    def key(self) -> str:
        if self.tool == "decode":
            return f"decode/{self.decoder}/{self.source}"
        parts = [self.tool, self.source, f"{self.targets}t"]
        if self.tool != "dd":
            parts.append("verify" if self.verify else "noverify")
        if self.tool == "flasher" and self.image_cache == "warm":
            parts.append("warmcache")
        if self.with_bmap:
            parts.append("bmap")
        return "/".join(parts)

    @property
    def label(self) -> str:
        ext = "dense .img" if self.source == "raw" else f".{self.source}"
        if self.tool == "dd":
            return f"dd bs=4M oflag=direct conv=fsync ({ext})"
        if self.tool == "bmaptool":
            extra = "" if self.verify else " --no-verify"
            many = f"{self.targets} × " if self.targets > 1 else ""
            together = ", in parallel" if self.targets > 1 else ""
            return f"{many}bmaptool copy --bmap{extra} ({ext}{together})"
        if self.tool == "decode":
            via = "Python library" if self.decoder == "lib" else "flasher open_stream()"
            return f"decode {ext} to nowhere ({via})"
        verify = "verify" if self.verify else "--no-verify"
        cache = ", warm image cache (second card)" if self.image_cache == "warm" else ""
        bmap = " --bmap" if self.with_bmap else ""
        return f"flasher flash {ext}{bmap}, {verify}, {self.targets} target(s){cache}"

    def argv(
        self, images: ImageSet, devices: Sequence[str], flasher_cmd: Sequence[str]
    ) -> list[str]:
        src = str(images.source(self.source))
        if self.tool == "dd":
            return [
                "dd",
                f"if={src}",
                f"of={devices[0]}",
                "bs=4M",
                "oflag=direct",
                "conv=fsync",
                "status=none",
            ]
        if self.tool == "bmaptool":
            extra = [] if self.verify else ["--no-verify"]
            one = ["bmaptool", "-q", "copy", *extra, "--bmap", str(images.bmap), src]
            if len(devices) == 1:
                return [*one, devices[0]]
            # One bmaptool per target, all at once: what N independent writers cost here.
            script = (
                "pids=''; "
                + "".join(f'{shlex.join([*one, dev])} & pids="$pids $!"; ' for dev in devices)
                + "rc=0; for p in $pids; do wait $p || rc=1; done; exit $rc"
            )
            return ["sh", "-c", script]
        if self.tool == "decode":
            script = str(BENCH_DIR / "decode_bound.py")
            if self.decoder == "lib":
                return [sys.executable, script, "lib", self.source, src]
            return [sys.executable, script, "flasher", src]
        argv = [*flasher_cmd, "--json", "flash", src]
        for dev in devices:
            argv += ["--target", dev]
        argv.append("--yes")
        if not self.verify:
            argv.append("--no-verify")
        if self.with_bmap:
            argv += ["--bmap", str(images.bmap)]
        return argv


def full_matrix(*, with_flasher: bool) -> list[Case]:
    cases = [Case("dd", "raw")]
    cases += [Case("bmaptool", "raw", verify=False)]
    cases += [Case("bmaptool", kind, verify=True) for kind in SOURCE_KINDS]
    cases += [Case("bmaptool", "raw", 4, verify=True)]
    if with_flasher:
        for kind in SOURCE_KINDS:
            for targets in (1, 4):
                for verify in (True, False):
                    cases.append(Case("flasher", kind, targets, verify))
        cases += [Case("flasher", "raw", 1, True, with_bmap=True)]
        cases += [Case("flasher", kind, 1, True, "warm") for kind in SOURCE_KINDS if kind != "raw"]
    cases += [Case("decode", kind, 0, decoder="lib") for kind in SOURCE_KINDS]
    if with_flasher:
        cases += [Case("decode", kind, 0, decoder="flasher") for kind in SOURCE_KINDS]
    return cases


def quick_matrix(*, with_flasher: bool) -> list[Case]:
    cases = [
        Case("dd", "raw"),
        Case("bmaptool", "raw", verify=True),
        Case("bmaptool", "gz", verify=True),
    ]
    if with_flasher:
        cases += [Case("flasher", kind, 1, True) for kind in ("raw", "gz", "zst")]
        cases += [Case("flasher", "raw", 4, True), Case("flasher", "gz", 1, True, "warm")]
    cases += [Case("decode", "gz", 0, decoder="lib")]
    return cases
