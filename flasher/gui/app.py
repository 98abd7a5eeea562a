"""`flasher-gui`: start the desktop app. Builds the object graph (settings, API session factory,
image provider and cache, drive monitor, writer launcher, bridge, controller, window) and runs
the Qt event loop. Nothing here is global: tests and the screenshot script build the same graph
from their own parts with `build_services` and `build_window`.

    flasher-gui [--sandbox] [--api-url URL] [Qt options such as -platform offscreen]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtWidgets import QApplication

from flasher import __version__
from flasher.balena.session import BalenaSession
from flasher.cache import ImageCache
from flasher.drives.monitor import DriveMonitor
from flasher.errors import FlasherError
from flasher.gui.bridge import Bridge
from flasher.gui.controller import DriveWatch, FlashController, Services
from flasher.gui.dialogs import ExceptionHook
from flasher.gui.theme import configure_application, prepare_application
from flasher.gui.window import MainWindow
from flasher.heap import tune_for_streaming
from flasher.models import Secret
from flasher.provider import ImageProvider
from flasher.sandbox.server import SandboxServer
from flasher.settings import Settings, default_config_dir
from flasher.writer.launchers import Launcher, default_launcher

SANDBOX_ORIGIN = "sandbox:"  # the CLI's cache key for sandbox downloads (CliContext)


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Flasher's options, and the rest for Qt (-platform, -style, …)."""
    parser = argparse.ArgumentParser(
        prog="flasher-gui",
        description="Flasher: provision balenaOS devices — pick an OS, configure it, flash and "
        "verify SD cards, USB drives and image files.",
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="use the built-in offline balena API (no account, no network)",
    )
    parser.add_argument(
        "--sandbox-login",
        action="store_true",
        help="with --sandbox: act as logged in to the sandbox's API (its one user), so the "
        "fleet settings offer to use the login instead of a provisioning key",
    )
    parser.add_argument(
        "--api-url",
        metavar="URL",
        help="balena API to use (default: $FLASHER_API_URL or balenaCloud)",
    )
    parser.add_argument("--version", action="version", version=f"flasher-gui {__version__}")
    return parser.parse_known_args(list(argv))


def monitor_all_drives() -> DriveWatch:
    """The hotplug monitor, system drives included (the Targets page hides them until asked)."""
    return DriveMonitor(include_system=True)


@dataclass
class Backend:
    services: Services
    sandbox: SandboxServer | None = None

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None


def build_services(
    *,
    api_url: str | None = None,
    sandbox: SandboxServer | None = None,
    config_dir: Path | None = None,
    cache: ImageCache | None = None,
    launcher: Launcher | None = None,
    drive_watch: Callable[[], DriveWatch] | None = None,
    sandbox_login: bool = False,
) -> Backend:
    """The app's services; every part can be replaced, the defaults are the real ones."""
    folder = config_dir or default_config_dir()
    settings = Settings.load(folder)

    def session_factory() -> BalenaSession:
        if sandbox is not None:
            # As the CLI does: the saved login and the environment's tokens are for the real
            # API, never sent to the sandbox.
            # A sandbox login is its one user, any token will do.
            return BalenaSession(sandbox.url, Secret("sandbox-user") if sandbox_login else None)
        return BalenaSession.from_environment(api_url=api_url)

    try:
        probe = session_factory()  # reads the saved login; no request is sent
    except FlasherError:
        has_login = False  # the catalog's first query says what is wrong
    else:
        has_login = probe.authenticated
        probe.close()

    cache = cache or ImageCache()
    services = Services(
        settings=settings,
        save_settings=lambda s: s.save(folder),
        session_factory=session_factory,
        # The sandbox listens on a new port each run but serves the same images: one cache key.
        provider=ImageProvider(
            cache,
            session_factory,
            origin=SANDBOX_ORIGIN if sandbox is not None else None,
        ),
        launcher=launcher if launcher is not None else default_launcher(),
        drive_watch=drive_watch or monitor_all_drives,
        sandbox=sandbox is not None,
        # A device configured against the in-process sandbox could never reach it; it gets the
        # default endpoints (as the CLI does). A custom API is written into config.json.
        device_api_url=None if sandbox is not None else api_url,
        cache_dir=str(cache.root),
        window_state_path=str(folder / "window.ini"),
        has_login=has_login,
    )
    return Backend(services, sandbox)


def build_window(
    services: Services,
    bridge: Bridge | None = None,
) -> tuple[FlashController, MainWindow]:
    controller = FlashController(services, bridge or Bridge())
    window = MainWindow(controller)
    return controller, window


def main(argv: Sequence[str] | None = None) -> int:
    args, qt_args = parse_args(sys.argv[1:] if argv is None else argv)
    tune_for_streaming()
    prepare_application()
    app = QApplication([sys.argv[0], *qt_args])
    configure_application(app)
    backend = build_services(
        api_url=args.api_url,
        sandbox=SandboxServer.start() if args.sandbox else None,
        sandbox_login=args.sandbox_login and args.sandbox,
    )
    controller, window = build_window(backend.services)
    sys.excepthook = ExceptionHook(window)
    window.show()
    controller.load_device_types()
    try:
        return app.exec()
    finally:
        controller.shutdown()
        backend.close()


if __name__ == "__main__":  # python -m flasher.gui.app, as flasher-gui
    sys.exit(main())
