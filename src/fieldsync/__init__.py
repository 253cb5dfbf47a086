"""fieldsync: a self-hosted, offline-first data platform."""

__version__ = "0.1.0"
