"""Supervisor client test helpers: the sandbox fleets' ids and a client for a fake supervisor
(the `devices`, `kitchen` and `multi` fixtures are in tests/integration/conftest.py)."""

from __future__ import annotations

from flasher.models import Secret
from flasher.sandbox.devices import GATEWAY_FLEET
from flasher.sandbox.supervisor_fake import FakeSupervisor
from flasher.supervisor.client import SupervisorClient
from flasher.supervisor.transport import DirectTransport

DEMO = 1958513
GATEWAY = GATEWAY_FLEET[0]


def client_for(fake: FakeSupervisor, key: str | None = "global") -> SupervisorClient:
    if key == "global":
        key = fake.spec.api_key
    return SupervisorClient(DirectTransport(fake.url, Secret(key) if key else None))
