"""A server plugin for the benches: every account create and update passes through Python."""

from __future__ import annotations

from fieldsync.records.plugins import PluginContext, PluginRegistry


def register(plugins: PluginRegistry) -> None:
    @plugins.on("account", "create", "pre-operation")
    @plugins.on("account", "update", "pre-operation")
    def normalise_phone(ctx: PluginContext) -> None:
        phone = ctx.target.get("telephone1")
        if isinstance(phone, str):
            ctx.target["telephone1"] = " ".join(phone.split())
