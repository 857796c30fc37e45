"""Continuo shared core: events, store, bus, relay, settings, logging."""

__version__ = "0.1.0"
