"""The assembled platform: store, plugins (the organisation and offline rules first), records
service, authenticator, organisation API and offline API, opened from settings in one call."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fieldsync.identity import rules
from fieldsync.identity.auth import Authenticator, AuthSettings
from fieldsync.identity.organisation import Organisation
from fieldsync.offline import rules as offline_rules
from fieldsync.offline.service import Offline
from fieldsync.records import computed
from fieldsync.records.plugins import PluginRegistry
from fieldsync.records.service import Records
from fieldsync.security.context import ContextCache
from fieldsync.store.store import Store


@dataclass
class Platform:
    store: Store
    plugins: PluginRegistry
    records: Records
    auth: Authenticator
    org: Organisation
    offline: Offline
    contexts: ContextCache  # security contexts, reused until the change log moves

    def close(self) -> None:
        self.store.close()


def build(
    store: Store,
    *,
    plugin_modules: Iterable[str] = (),
    auth_settings: AuthSettings | None = None,
    plugins: PluginRegistry | None = None,
) -> Platform:
    """Assemble the platform on an open store; creates the predefined roles if missing."""
    plugins = plugins or PluginRegistry()
    rules.register(plugins)
    computed.register(plugins)
    offline_rules.register(plugins)
    plugins.load(plugin_modules)
    records = Records(store, plugins)
    auth = Authenticator(store, auth_settings)
    org = Organisation(records, auth)
    org.ensure_predefined_roles()
    return Platform(store, plugins, records, auth, org, Offline(records), ContextCache(store))


def open_platform(url: str, **kwargs: object) -> Platform:
    """Open (and upgrade) the database at ``url`` and assemble the platform on it."""
    return build(Store.open(url), **kwargs)  # type: ignore[arg-type]
