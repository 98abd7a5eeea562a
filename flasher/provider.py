"""Turn what the user named (a file, a URL, or a device type and version) into a raw image path.

Downloads go into the content-addressed cache; compressed images are unpacked once, next to
them in the cache, so later cards and later runs start from the raw image. A raw local file is
used where it is, opened read-only. Never prints; imports no Qt.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flasher.cache import ImageCache, ImageMeta
from flasher.error_codes import Action
from flasher.errors import CatalogError, ConfigError
from flasher.events import CancelToken, EventCallback, Phase, PhaseChanged, ignore_event
from flasher.image.sources import ImageSource, SourceKind, open_source
from flasher.unpacking import BackgroundUnpack, start_unpack

if TYPE_CHECKING:
    # The network side (requests and the balena client) is imported only when an image is to
    # be downloaded, so flashing a local file starts quickly.
    import requests

    from flasher.balena.os_model import OsModel
    from flasher.balena.session import BalenaSession
    from flasher.download import DownloadRequest

SessionFactory = Callable[[], "BalenaSession"]


@dataclass(frozen=True)
class SourceSpec:
    """Exactly one of `path`, `url` or `device_type`."""

    path: str | None = None
    url: str | None = None
    device_type: str | None = None
    version: str = "latest"
    development: bool = False
    image_type: str | None = None
    file_type: str = ".gz"

    def __post_init__(self) -> None:
        given = [v for v in (self.path, self.url, self.device_type) if v]
        if len(given) != 1:
            raise ConfigError(
                "source",
                "name exactly one image: a file, an http(s) URL, or a device type",
                action=Action.NAME_IMAGE,
            )
        if self.url and urlsplit(self.url).scheme not in ("http", "https"):
            raise ConfigError("source", "URLs must start with http:// or https://")

    @classmethod
    def from_argument(cls, text: str) -> SourceSpec:
        """A positional SOURCE: an http(s) URL or a local path."""
        if text.startswith(("http://", "https://")):
            return cls(url=text)
        return cls(path=text)


@dataclass(frozen=True)
class ResolvedImage:
    """`raw_path` is the raw image; with `unpacking` it is still being decoded there (it
    exists once the unpacking has ended well). `source` is the file it came from, as sniffed
    on the way, when it was."""

    raw_path: Path
    sha256: str | None = None
    device_type: str | None = None
    os_version: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    unpacking: BackgroundUnpack | None = field(default=None, compare=False)
    source: ImageSource | None = field(default=None, compare=False)


def resolve_version(model: OsModel, slug: str, version: str) -> str:
    """An exact version for `version` ("latest", an exact one, or a semver range)."""
    if version == "latest":
        found = model.get_max_satisfying_version(slug, "default", os_type="default")
    else:
        found = model.get_max_satisfying_version(slug, version.removeprefix("v"))
    if found is None:
        raise CatalogError(
            f"No balenaOS version of {slug} matches {version!r}.",
            hint=f"Pick one of the balenaOS versions of {slug}.",
            action=Action.LIST_OS_VERSIONS,
            device_type=slug,
            version=version,
        )
    return found


def os_download_request(
    model: OsModel,
    origin: str,
    device_type: str,
    version: str,
    *,
    development: bool = False,
    file_type: str | None = None,
    image_type: str | None = None,
    expected_sha256: str | None = None,
) -> DownloadRequest:
    """The /download request for a device type and version (aliases and ranges resolved)."""
    from flasher.download import DownloadRequest

    slug = model.device_types.resolve_slug(device_type)
    exact = resolve_version(model, slug, version)
    params = {"deviceType": slug, "version": exact}
    if development:
        params["developmentMode"] = "true"
    if file_type:
        params["fileType"] = file_type
    if image_type:
        params["imageType"] = image_type
    return DownloadRequest(
        "/download",
        params,
        origin=origin,
        meta=ImageMeta(
            device_type=slug,
            os_version=exact,
            file_type=file_type or ".img",
            image_type=image_type,
            development=development,
        ),
        expected_sha256=expected_sha256,
    )


class _PlainRequester:
    """Downloads from a full URL that is not the balena API (no token is ever sent there)."""

    def __init__(self) -> None:
        from flasher.http import retrying_session

        self._session = retrying_session()
        self._session.headers["User-Agent"] = "flasher"

    def request(self, method: str, path_or_url: str, /, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", (10, 60))
        return self._session.request(method, path_or_url, **kwargs)

    def close(self) -> None:
        self._session.close()


class ImageProvider:
    """Obtains raw images for flash jobs through the cache and, when needed, the balena API."""

    def __init__(
        self,
        cache: ImageCache,
        session_factory: SessionFactory | None = None,
        *,
        origin: str | None = None,
    ) -> None:
        """`origin` names the API in cache keys (default: its URL); the sandbox, which listens
        on a new port every run but always serves the same images, passes "sandbox:"."""
        self.cache = cache
        self._session_factory = session_factory
        self._origin = origin

    def obtain(
        self,
        spec: SourceSpec,
        *,
        on_event: EventCallback = ignore_event,
        cancel: CancelToken | None = None,
        background: bool = False,
    ) -> ResolvedImage:
        """The raw image for `spec`. With `background`, a compressed image whose raw size is
        known and that is not unpacked yet is unpacked on a thread (`ResolvedImage.unpacking`)
        and this returns at once."""
        cancel = cancel or CancelToken()
        if spec.path:
            return self._local(Path(spec.path), on_event, cancel, background)
        on_event(PhaseChanged(Phase.RESOLVING))
        from flasher.balena.os_model import OsModel
        from flasher.download import DownloadRequest, download_image

        if spec.url:
            plain = _PlainRequester()
            try:
                request = DownloadRequest(spec.url, meta=ImageMeta(source_url=spec.url))
                result = download_image(
                    plain, request, self.cache, on_event=on_event, cancel=cancel
                )
            finally:
                plain.close()
        else:
            if self._session_factory is None:
                raise CatalogError(
                    "No balena API is configured for device-type downloads.",
                    hint="Name an image file instead.",
                    action=Action.USE_SANDBOX,
                )
            session = self._session_factory()
            model = OsModel(session)
            request = os_download_request(
                model,
                self._origin or session.api_url,
                spec.device_type or "",
                spec.version,
                development=spec.development,
                file_type=spec.file_type,
                image_type=spec.image_type,
            )
            # download_image says "downloading" itself, and only when it does download.
            result = download_image(session, request, self.cache, on_event=on_event, cancel=cancel)
        entry = result.entry
        on_event(PhaseChanged(Phase.UNPACKING))
        unpacking = None
        source = open_source(entry.path) if background else None
        if source is not None and _can_follow(source):
            started = start_unpack(
                self.cache, source, entry=entry, on_event=on_event, cancel=cancel
            )
            raw, unpacking = (
                (started.target, started)
                if isinstance(started, BackgroundUnpack)
                else (started, None)
            )
        else:
            raw = self.cache.unpacked(entry, on_event=on_event, cancel=cancel)
        return ResolvedImage(
            unpacking=unpacking,
            source=source,
            raw_path=raw,
            sha256=entry.sha256,
            device_type=entry.meta.device_type,
            os_version=entry.meta.os_version,
            details={
                "cache_path": str(entry.path),
                "from_cache": result.from_cache,
                "kind": entry.kind,
                "source_size_bytes": entry.size_bytes,
            },
        )

    def _local(
        self, path: Path, on_event: EventCallback, cancel: CancelToken, background: bool
    ) -> ResolvedImage:
        source = open_source(path)  # ImageError for missing, unsupported or empty files
        if source.kind is SourceKind.RAW:
            return ResolvedImage(
                raw_path=path.resolve(), source=source, details={"kind": source.kind.value}
            )
        on_event(PhaseChanged(Phase.UNPACKING))
        key = _local_key(path)
        unpacking = None
        if background and _can_follow(source):
            started = start_unpack(self.cache, source, key=key, on_event=on_event, cancel=cancel)
            raw, unpacking = (
                (started.target, started)
                if isinstance(started, BackgroundUnpack)
                else (started, None)
            )
        else:
            raw = self.cache.unpacked_local(path, key, on_event=on_event, cancel=cancel)
        return ResolvedImage(
            unpacking=unpacking,
            source=source,
            raw_path=raw,
            details={
                "kind": source.kind.value,
                "unpacked_path": str(raw),
                "source_size_bytes": source.compressed_size,
            },
        )


def _can_follow(source: ImageSource) -> bool:
    """Whether a write can follow the decoding of `source`: it must know the raw size, or
    learn it from a gzip trailer and the partition table."""
    return source.kind is not SourceKind.RAW and (
        source.uncompressed_size is not None or source.kind is SourceKind.GZIP
    )


def _local_key(path: Path) -> str:
    """Identifies a local compressed file without hashing it: path, size and change time."""
    st = os.stat(path)
    return f"local:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
