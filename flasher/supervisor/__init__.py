"""The device side: a typed client for the balena Supervisor API (directly or through the balena
API's proxy), its errors, and the post-flash check. Qt-free; never prints.

    transport.py  DirectTransport (address + key), ProxyTransport (POST <api>/supervisor/<path>)
    client.py     SupervisorClient: one method per endpoint
    models.py     frozen answers (DeviceState, DeviceInfo, StateStatus, ...)
    errors.py     DeviceError and its subclasses (unauthorized, locked, offline, unreachable ...)
    wait.py       wait_for_device: the post-flash check
    registry.py   the devices the balena API knows (list, find by uuid prefix or name)
"""
