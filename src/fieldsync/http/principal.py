"""The caller of a request: the dependency that turns a bearer token into the caller's
security context (checked on every request), shared by every router."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Request

from fieldsync import tracing
from fieldsync.errors import Unauthorized
from fieldsync.platform import Platform
from fieldsync.security.model import SecurityContext


def platform(request: Request) -> Platform:
    found: Platform = request.app.state.platform
    return found


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("sign in first: send 'Authorization: Bearer <token>'")
    return token.strip()


def caller(p: Platform, token: str, conn: sa.Connection | None = None) -> SecurityContext:
    """The security context of a bearer token, checked now: the token (and its session)
    and, in the same read transaction (``conn``, or one of its own), whether anything the
    context is made of changed, the user's enabled state among it. The context comes from
    the platform's cache, which reloads it whenever the change log shows such a change
    (:class:`fieldsync.security.context.ContextCache`)."""
    if conn is None:
        with p.store.read() as c:
            return caller(p, token, c)
    user_id, stamp = p.auth.check(token, conn)
    return p.contexts.get(user_id, conn, stamp)


def authenticate(request: Request) -> SecurityContext:
    """The security context of the request's bearer token (checked on every request)."""
    ctx = caller(platform(request), bearer_token(request))
    request.state.principal = ctx
    tracing.annotate({"enduser.id": str(ctx.user_id)})
    return ctx


Principal = Annotated[SecurityContext, Depends(authenticate)]
