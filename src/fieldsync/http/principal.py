"""The caller of a request: the dependency that turns a bearer token into the caller's
security context (checked on every request), shared by every router."""

from __future__ import annotations

from typing import Annotated

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


def authenticate(request: Request) -> SecurityContext:
    """The security context of the request's bearer token (checked on every request: the
    token, its session, and that the user is still enabled). The context comes from the
    platform's cache, which reloads it whenever the change log shows a change to anything it
    is made of (:class:`fieldsync.security.context.ContextCache`)."""
    p = platform(request)
    user_id = p.auth.authenticate(bearer_token(request))
    ctx = p.contexts.get(user_id)
    request.state.principal = ctx
    tracing.annotate({"enduser.id": str(user_id)})
    return ctx


Principal = Annotated[SecurityContext, Depends(authenticate)]
