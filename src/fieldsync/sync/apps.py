"""The apps a user can take offline, for a device choosing one after sign-in (the browser
device's app picker): every app enabled for offline whose published profile the user may
sync (the same question :func:`fieldsync.offline.access.offline_access` answers at every
handshake), with who the user is."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fieldsync.errors import NotFound, OfflineNotAvailable
from fieldsync.offline.access import APP, offline_access
from fieldsync.security.model import SecurityContext
from fieldsync.store.store import Store


def offline_apps(store: Store, ctx: SecurityContext) -> dict[str, Any]:
    with store.read() as conn:
        users = store.sql_table("systemuser")
        fullname = conn.execute(
            sa.select(users.c.fullname).where(users.c.systemuserid == ctx.user_id)
        ).scalar()
        apps = store.sql_table(APP)
        rows = conn.execute(
            sa.select(apps.c.appmoduleid, apps.c.uniquename, apps.c.name)
            .where(apps.c.canbeusedoffline.is_(True))
            .order_by(apps.c.name, apps.c.appmoduleid)
        ).all()
        found: list[dict[str, Any]] = []
        for row in rows:
            try:
                offline_access(store, conn, ctx, row.appmoduleid)
            except (NotFound, OfflineNotAvailable):
                continue
            found.append(
                {"id": str(row.appmoduleid), "uniquename": row.uniquename, "name": row.name}
            )
    return {
        "user": {"id": str(ctx.user_id), "name": ctx.username, "fullname": fullname},
        "value": found,
    }
