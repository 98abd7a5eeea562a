"""The writer: protocol, block-device checks, the copy/verify engine, the root helper and its client.

Must not import requests, Qt, the pipeline or the balena client (the helper runs as root).
"""
