"""The writer: protocol, block-device checks, the write/verify engine, the root helper, its client.

Must not import requests, Qt, the pipeline or the balena client (the helper runs as root).
"""
