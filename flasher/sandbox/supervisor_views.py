"""The fake supervisor's read-only views and streams: the state endpoints' JSON, shaped as the
real supervisor shapes it, and the never-ending log and journal streams.

Standard library only (plus flasher.sandbox's supervisor modules).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flasher.sandbox.supervisor_http import Reply, Request, Scope, check_int, failed, js, truthy

if TYPE_CHECKING:
    from flasher.sandbox.supervisor_fake import FakeState, FakeSupervisor


def view_v1_device(fake: FakeSupervisor) -> dict[str, Any]:
    state = fake.state
    out: dict[str, Any] = {
        "api_port": 48484,
        "ip_address": fake.spec.ip_address,
        "mac_address": fake.spec.mac_address,
        "os_version": fake.spec.os_version,
        "supervisor_version": fake.spec.supervisor_version,
        "update_pending": False,
        "update_downloaded": False,
        "update_failed": False,
    }
    first = next(iter(state.apps.values()), None)
    if first is not None:
        out["commit"] = first.commit
        if first.services:
            status = first.services[0].status
            out["status"] = "Idle" if status == "Running" else status
            out["download_progress"] = None
    return out


def view_apps_state(state: FakeState, scope: Scope) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for app in state.apps.values():
        if not scope.allows(app.app_id):
            continue
        out[app.name] = {
            "appId": app.app_id,
            "appUuid": app.uuid,
            "commit": app.commit,
            "updateStatus": "done",
            "services": {
                s.name: {
                    "status": s.status,
                    "image": s.image,
                    "releaseId": s.release_id,
                    "downloadProgress": None,
                }
                for s in app.services
            },
        }
    return out


def view_app_state(state: FakeState, raw_id: str, scope: Scope) -> Reply:
    app_id = check_int(raw_id)
    if not app_id:
        return failed(400, f"Invalid application ID: {raw_id}")
    app = state.apps.get(app_id)
    if app is None or not scope.allows(app_id):
        return failed(409, f"Application ID does not exist: {app_id}")
    services = {
        str(s.image_id): {"status": s.status, "releaseId": s.release_id, "download_progress": None}
        for s in app.services
    }
    return js(200, {"local": {str(app_id): {"services": services}}, "commit": app.commit})


def view_state_status(state: FakeState) -> dict[str, Any]:
    app = next(iter(state.apps.values()), None)
    services = app.services if app else []
    return {
        "status": "success",
        "appState": "applied",
        "overallDownloadProgress": None,
        "containers": [
            {
                "status": s.status,
                "serviceName": s.name,
                "appId": app.app_id if app else None,
                "imageId": s.image_id,
                "serviceId": s.service_id,
                "containerId": s.container_id,
                "createdAt": "2026-11-30T09:12:44.506Z",
            }
            for s in services
        ],
        "images": [
            {
                "name": s.image,
                "appId": app.app_id if app else None,
                "serviceName": s.name,
                "imageId": s.image_id,
                "dockerImageId": "sha256:" + s.container_id[:64].ljust(64, "0"),
                "status": "Downloaded",
                "downloadProgress": None,
            }
            for s in services
        ],
        "release": app.commit if app else None,
    }


def view_container_id(state: FakeState, request: Request) -> Reply:
    services = {s.name: s.container_id for a in state.apps.values() for s in a.services}
    wanted = request.query.get("serviceName") or request.query.get("service")
    if wanted:
        if wanted not in services:
            return failed(503, "Could not find service with that name")
        return js(200, {"status": "success", "containerId": services[wanted]})
    return js(200, {"status": "success", "services": services})


def view_local_target(fake: FakeSupervisor, method: str, body: dict[str, Any]) -> Reply:
    state = fake.state
    if method == "POST":
        if not fake.spec.local_mode:
            return failed(400, "Target state can only set when device is in local mode")
        local = body.get("local")
        if not isinstance(local, dict) or not isinstance(local.get("apps", {}), dict):
            return failed(400, "Invalid target state: expected a 'local' object with 'apps'")
        state.local_target = {"local": local}
        return js(200, {"status": "success", "message": "OK"})
    target = state.local_target or {
        "local": {
            "name": fake.spec.name,
            "config": {
                "SUPERVISOR_LOCAL_MODE": "1" if fake.spec.local_mode else "0",
                "SUPERVISOR_POLL_INTERVAL": "900000",
                "SUPERVISOR_OVERRIDE_LOCK": "false",
            },
            "apps": {},
        }
    }
    return js(200, {"status": "success", "state": target})


def view_tags(state: FakeState, method: str, body: dict[str, Any]) -> Reply:
    if method == "GET":
        rows = [
            {"id": 188300 + i, "name": k, "value": v}
            for i, (k, v) in enumerate(sorted(state.tags.items()))
        ]
        return js(200, {"status": "success", "tags": rows})
    if not all(isinstance(v, str) for v in body.values()):
        return failed(400, "Invalid tags body, all values must be strings")
    if any(re.search(r"\s", k) for k in body):
        return failed(400, "Tag keys cannot contain whitespace")
    state.tags.update(body)
    return js(202, {"status": "success"})


def stream_logs(fake: FakeSupervisor) -> Iterator[bytes]:
    yield b'{"message":"Streaming logs","isSystem":true}\n'
    n = 0
    while not fake.stopping.is_set():
        app = next(iter(fake.state.apps.values()), None)
        service = app.services[n % len(app.services)].name if app and app.services else None
        line: dict[str, Any] = {
            "message": f"{service or 'supervisor'} log line {n}",
            "timestamp": int(time.time() * 1000),
        }
        if service:
            line["serviceName"] = service
        else:
            line["isSystem"] = True
        yield json.dumps(line).encode() + b"\n"
        n += 1
        time.sleep(fake.spec.log_interval_s)


_JOURNAL_UNITS = ("balena-supervisor.service", "balena.service", "NetworkManager.service")


def stream_journal(fake: FakeSupervisor, body: dict[str, Any]) -> Iterator[bytes]:
    unit = body.get("unit")
    count = check_int(body.get("count"))
    follow = truthy(body.get("follow"))
    units = [u for u in _JOURNAL_UNITS if unit in (None, u)]
    if not units:
        return
    host = fake.state.hostname
    lines = [
        f"Dec 07 01:00:{i:02d} {host} {units[i % len(units)].split('.')[0]}[{100 + i}]: "
        f"journal entry {i}\n".encode()
        for i in range(30)
    ]
    if count is not None and count > 0:
        lines = lines[-count:]
    yield from lines
    n = 30
    while follow and not fake.stopping.is_set():
        time.sleep(fake.spec.log_interval_s)
        yield f"Dec 07 01:01:00 {host} {units[0].split('.')[0]}[1]: journal entry {n}\n".encode()
        n += 1
