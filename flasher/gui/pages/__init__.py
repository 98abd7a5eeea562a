"""The window's pages: OS, Configure, Targets (the three steps) and Progress."""
