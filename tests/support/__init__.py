"""Test support: image builders with the real tools, a local HTTP server, small helpers."""
