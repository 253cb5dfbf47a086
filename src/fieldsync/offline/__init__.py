"""Offline: apps and their offline settings, mobile offline profiles, publish, and who gets
which published profile."""
