"""A server plugin for bench/sync.py: every account update passes through Python code."""

from __future__ import annotations

from fieldsync.records.plugins import PluginContext, PluginRegistry


def register(plugins: PluginRegistry) -> None:
    @plugins.on("account", "update", "pre-operation")
    def normalise_phone(ctx: PluginContext) -> None:
        phone = ctx.target.get("telephone1")
        if isinstance(phone, str):
            ctx.target["telephone1"] = " ".join(phone.split())
