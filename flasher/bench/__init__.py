"""Bench station: slots that flash cards as they are inserted, with per-card reports."""
