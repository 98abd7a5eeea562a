"""Drive discovery, hotplug and the constraints that decide whether a drive may be written."""
