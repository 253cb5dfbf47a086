"""Sync, server side: scope plans, download pages, upload of outboxes, the sync service."""
