"""Built-in offline backend: a local balena API, an embedded catalog and synthesized images."""
