"""The balena side: HTTP session, OS model, versions, device types and config.json."""
