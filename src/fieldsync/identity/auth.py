"""Sign-in and tokens.

- A password (argon2id) signs a user in and opens a **session**: a short-lived access token
  (a signed JWT naming the user and the session) and a refresh token.
- A refresh token is used once: refreshing rotates it. Presenting an already used refresh
  token again is taken as theft and revokes the whole session, with one allowance: for a
  short grace period after a rotation (``refresh_grace_seconds``, 30 s by default) the token
  just rotated is accepted again and answers with the same successor, so two requests that
  refreshed at once (two portal pages loading with the same cookie, a device retrying a
  refresh whose answer it lost) both succeed and leave the client holding one valid token.
  The successor is not stored: a session's refresh tokens are derived from a random seed
  kept with the session and the signing key (an HMAC of the session and its generation), so
  every server process can answer the grace request; only hashes of tokens are stored. Past
  the grace period, or for any older token, a replay revokes the session as before.
- Revoking a refresh token revokes its session, and with it every access token of that
  session, at once: each request checks that its session is still open.
- **API tokens** are long-lived bearer tokens for services and scripts, revocable one by one.
- A disabled user is refused at once, whatever token they hold: each request loads the user.
- Failed sign-ins are counted per user name and per client address in the database (so all
  server processes share the count); past the limit, sign-in answers 429 with Retry-After.

Tokens other than JWTs are ``fsr.<id>.<secret>`` (refresh) and ``fsk.<id>.<secret>`` (API);
only their SHA-256 is stored.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

import jwt
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from fieldsync.errors import BadRequest, NotFound, TooManyRequests, Unauthorized
from fieldsync.security.context import STAMP_COLUMNS, Stamp, stamp_of
from fieldsync.store.catalog import (
    fs_apitoken,
    fs_credential,
    fs_session,
    fs_signin_failure,
)
from fieldsync.store.store import Store, utcnow
from fieldsync.types import RecordId

# Every request runs one of these: built once (a statement built anew costs more than it
# runs), each reading the security context's stamp too (the request's next question).
API_TOKEN = sa.select(
    fs_apitoken.c.userid,
    fs_apitoken.c.tokenhash,
    fs_apitoken.c.revokedon,
    fs_apitoken.c.expireson,
    *STAMP_COLUMNS,
).where(fs_apitoken.c.tokenid == sa.bindparam("tokenid"))
SESSION_STATE = sa.select(fs_session.c.revokedon, fs_session.c.userid, *STAMP_COLUMNS).where(
    fs_session.c.sessionid == sa.bindparam("sessionid")
)

MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_NAME = 1024  # fs_signin_failure.username (and systemuser.domainname) hold no more
ISSUER = "fieldsync"


@dataclass(frozen=True)
class AuthSettings:
    secret_key: str = ""
    access_token_seconds: int = 900
    refresh_token_days: int = 30
    refresh_grace_seconds: int = 30
    max_failures: int = 5
    failure_window_seconds: int = 900
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    user_id: RecordId

    def to_json(self) -> dict[str, object]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _matches(stored: str | None, token: str) -> bool:
    return stored is not None and hmac.compare_digest(stored, _digest(token))


def _split(token: str, prefix: str) -> tuple[uuid.UUID, str] | None:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != prefix:
        return None
    try:
        return uuid.UUID(hex=parts[1]), parts[2]
    except ValueError:
        return None


class Authenticator:
    def __init__(self, store: Store, settings: AuthSettings | None = None) -> None:
        self.store = store
        self.settings = settings or AuthSettings()
        self._hasher = PasswordHasher(
            time_cost=self.settings.argon2_time_cost,
            memory_cost=self.settings.argon2_memory_kib,
            parallelism=self.settings.argon2_parallelism,
        )
        self._secret = self.settings.secret_key or store.meta("token_secret") or ""
        if len(self._secret) < 32:
            raise BadRequest("the token signing key must be at least 32 characters")
        self._dummy_hash = self._hasher.hash(secrets.token_hex(8))

    # -- passwords ------------------------------------------------------------------------

    def set_password(
        self, user_id: RecordId, password: str, conn: sa.Connection | None = None
    ) -> None:
        self.set_password_hash(user_id, self.hash_password(password), conn)

    def hash_password(self, password: str) -> str:
        if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise BadRequest(f"a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters")
        return self._hasher.hash(password)

    def set_password_hash(
        self, user_id: RecordId, hashed: str, conn: sa.Connection | None = None
    ) -> None:
        """Store an argon2 hash made by :meth:`hash_password` (one hash may serve several
        users, as the demo's shared password does)."""
        if conn is None:
            self.store.transact(lambda c: self._store_password(c, user_id, hashed))
        else:
            self._store_password(conn, user_id, hashed)

    def _store_password(self, conn: sa.Connection, user_id: RecordId, hashed: str) -> None:
        su = self.store.sql_table("systemuser")
        if (
            conn.execute(sa.select(su.c.systemuserid).where(su.c.systemuserid == user_id)).first()
            is None
        ):
            raise NotFound(f"systemuser {user_id} does not exist")
        now = utcnow()
        updated = conn.execute(
            fs_credential.update()
            .where(fs_credential.c.userid == user_id)
            .values(passwordhash=hashed, changedon=now)
        ).rowcount
        if not updated:
            conn.execute(
                fs_credential.insert().values(userid=user_id, passwordhash=hashed, changedon=now)
            )

    # -- sign-in --------------------------------------------------------------------------

    def sign_in(self, username: str, password: str, address: str = "") -> TokenPair:
        if not isinstance(username, str) or not isinstance(password, str) or not username:
            raise BadRequest("sign-in needs a username and a password")
        if len(username) > MAX_NAME or len(password) > MAX_PASSWORD:
            # no user has such a name or password: refused before it is hashed or stored
            raise BadRequest(
                f"a user name has at most {MAX_NAME} characters and a password at most "
                f"{MAX_PASSWORD}"
            )
        username = username.strip().lower()
        address = address[:64]
        now = utcnow()
        try:
            self._check_rate(username, address, now)
        except TooManyRequests as exc:
            self.store.audit.signin_refused(username, exc.message, address=address or None)
            raise
        su = self.store.sql_table("systemuser")
        with self.store.read() as conn:
            row = conn.execute(
                sa.select(su.c.systemuserid, su.c.isdisabled, fs_credential.c.passwordhash)
                .join(fs_credential, fs_credential.c.userid == su.c.systemuserid)
                .where(sa.func.lower(su.c.domainname) == username)
            ).first()
        hashed = row.passwordhash if row is not None else self._dummy_hash
        try:
            ok = self._hasher.verify(hashed, password) and row is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or row is None:
            window = dt.timedelta(seconds=self.settings.failure_window_seconds)

            def count_failure(conn: sa.Connection) -> None:
                # failures older than the window no longer count: drop them as we go
                conn.execute(
                    fs_signin_failure.delete().where(fs_signin_failure.c.at < now - window)
                )
                conn.execute(
                    fs_signin_failure.insert().values(username=username, address=address, at=now)
                )

            self.store.transact(count_failure)
            self.store.audit.signin_refused(
                username, "invalid username or password", address=address or None
            )
            raise Unauthorized("invalid username or password")
        if row.isdisabled:
            self.store.audit.signin_refused(
                username, "this user is disabled", address=address or None
            )
            raise Unauthorized("this user is disabled")

        user_id = row.systemuserid
        rehashed = self._hasher.hash(password) if self._hasher.check_needs_rehash(hashed) else None

        def open_session(conn: sa.Connection) -> TokenPair:
            conn.execute(fs_signin_failure.delete().where(fs_signin_failure.c.username == username))
            if rehashed is not None:
                conn.execute(
                    fs_credential.update()
                    .where(fs_credential.c.userid == user_id)
                    .values(passwordhash=rehashed)
                )
            return self._open_session(conn, user_id, now)

        return self.store.transact(open_session)

    def _check_rate(self, username: str, address: str, now: dt.datetime) -> None:
        s = self.settings
        since = now - dt.timedelta(seconds=s.failure_window_seconds)
        with self.store.read() as conn:
            for column, value, limit in (
                (fs_signin_failure.c.username, username, s.max_failures),
                (fs_signin_failure.c.address, address, s.max_failures * 4),
            ):
                if not value:
                    continue
                count, oldest = conn.execute(
                    sa.select(sa.func.count(), sa.func.min(fs_signin_failure.c.at)).where(
                        column == value, fs_signin_failure.c.at > since
                    )
                ).one()
                if count >= limit:
                    wait = s.failure_window_seconds - int((now - oldest).total_seconds())
                    raise TooManyRequests(
                        "too many failed sign-ins; try again later", retry_after=max(wait, 1)
                    )

    def _open_session(self, conn: sa.Connection, user_id: RecordId, now: dt.datetime) -> TokenPair:
        # the user's sessions that expired or were revoked a while ago are of no more use
        stale = now - dt.timedelta(days=1)
        conn.execute(
            fs_session.delete().where(
                fs_session.c.userid == user_id,
                sa.or_(fs_session.c.expireson < stale, fs_session.c.revokedon < stale),
            )
        )
        session_id = uuid.uuid4()
        seed = secrets.token_hex(32)
        refresh = self._refresh_token(session_id, seed, 1)
        conn.execute(
            fs_session.insert().values(
                sessionid=session_id,
                userid=user_id,
                refreshhash=_digest(refresh),
                seed=seed,
                generation=1,
                createdon=now,
                expireson=now + dt.timedelta(days=self.settings.refresh_token_days),
            )
        )
        return TokenPair(
            self._access(user_id, session_id, now),
            refresh,
            self.settings.access_token_seconds,
            user_id,
        )

    def _access(self, user_id: RecordId, session_id: uuid.UUID, now: dt.datetime) -> str:
        claims = {
            "iss": ISSUER,
            "sub": str(user_id),
            "sid": session_id.hex,
            "typ": "access",
            "iat": int(now.timestamp()),
            "exp": int(now.timestamp()) + self.settings.access_token_seconds,
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def _refresh_token(self, session_id: uuid.UUID, seed: str, generation: int) -> str:
        """The refresh token of a session's generation: derived, so that the successor of a
        just-rotated token can be given again without being stored."""
        mac = hmac.new(
            self._secret.encode(),
            f"fieldsync-refresh:{session_id.hex}:{seed}:{generation}".encode(),
            hashlib.sha256,
        ).digest()
        secret = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        return f"fsr.{session_id.hex}.{secret}"

    def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate a refresh token. The token rotated last is accepted again for the grace
        period and answers with the same successor; any other used token revokes its
        session."""
        parsed = _split(refresh_token, "fsr") if isinstance(refresh_token, str) else None
        if parsed is None:
            raise Unauthorized("invalid refresh token")
        session_id, _ = parsed
        now = utcnow()
        grace = dt.timedelta(seconds=max(self.settings.refresh_grace_seconds, 0))
        su = self.store.sql_table("systemuser")

        def rotate(conn: sa.Connection) -> tuple[bool, TokenPair | None]:
            # the row lock orders concurrent refreshes of one session (on SQLite the write
            # transaction does): the second one sees the first one's rotation
            row = conn.execute(
                sa.select(fs_session, su.c.isdisabled)
                .join(su, su.c.systemuserid == fs_session.c.userid)
                .where(fs_session.c.sessionid == session_id)
                .with_for_update(of=fs_session)
            ).first()
            current = row is not None and _matches(row.refreshhash, refresh_token)
            previous = row is not None and _matches(row.previoushash, refresh_token)
            if row is not None and row.isdisabled and (current or previous):
                # said before "revoked": disabling a user revokes their sessions, and a device
                # told "disabled" knows to remove the user's data
                raise Unauthorized("this user is disabled")
            if row is None or row.revokedon is not None or row.expireson <= now:
                raise Unauthorized("the refresh token is expired or revoked")
            if current:
                seed = row.seed or secrets.token_hex(32)
                generation = row.generation + 1
                new = self._refresh_token(session_id, seed, generation)
                conn.execute(
                    fs_session.update()
                    .where(fs_session.c.sessionid == session_id)
                    .values(
                        refreshhash=_digest(new),
                        previoushash=row.refreshhash,
                        rotatedon=now,
                        seed=seed,
                        generation=generation,
                    )
                )
            elif (
                previous
                and row.seed is not None
                and row.rotatedon is not None
                and now - row.rotatedon <= grace
            ):
                # a concurrent refresh of the token just rotated: the same successor
                new = self._refresh_token(session_id, row.seed, row.generation)
            else:
                conn.execute(
                    fs_session.update()
                    .where(fs_session.c.sessionid == session_id)
                    .values(revokedon=now)
                )
                self.store.audit.session_reused(row.userid, session_id)
                return True, None
            pair = TokenPair(
                self._access(row.userid, session_id, now),
                new,
                self.settings.access_token_seconds,
                row.userid,
            )
            return False, pair

        revoked, pair = self.store.transact(rotate)
        if revoked or pair is None:
            raise Unauthorized("this refresh token was already used; the session is revoked")
        return pair

    def revoke(self, token: str) -> bool:
        """Revoke a refresh token (its whole session) or an API token. Returns whether one
        was found; unknown tokens are not an error (RFC 7009)."""
        now = utcnow()
        if not isinstance(token, str):
            return False
        for prefix, table, key, column in (
            ("fsr", fs_session, fs_session.c.sessionid, fs_session.c.refreshhash),
            ("fsk", fs_apitoken, fs_apitoken.c.tokenid, fs_apitoken.c.tokenhash),
        ):
            parsed = _split(token, prefix)
            if parsed is None:
                continue
            return self.store.transact(
                partial(self._revoke_row, table, key, column, parsed[0], token, now)
            )
        try:
            claims = self._decode(token)
        except Unauthorized:
            return False

        def work(conn: sa.Connection) -> None:
            conn.execute(
                fs_session.update()
                .where(fs_session.c.sessionid == uuid.UUID(hex=claims["sid"]))
                .values(revokedon=now)
            )
            self.store.audit.token_revoked(
                uuid.UUID(claims["sub"]), "session", uuid.UUID(hex=claims["sid"])
            )

        self.store.transact(work)
        return True

    def _revoke_row(
        self,
        table: sa.Table,
        key: sa.Column[Any],
        column: sa.Column[Any],
        found: Any,
        token: str,
        now: dt.datetime,
        conn: sa.Connection,
    ) -> bool:
        stored = conn.execute(sa.select(column, table.c.userid).where(key == found)).first()
        if stored is None:
            return False
        # the token rotated last still signs its session out (a client that lost the race of
        # two refreshes may hold it)
        previous = (
            conn.execute(sa.select(fs_session.c.previoushash).where(key == found)).scalar()
            if table is fs_session
            else None
        )
        if not (_matches(stored[0], token) or _matches(previous, token)):
            return False
        conn.execute(table.update().where(key == found).values(revokedon=now))
        kind = "session" if table is fs_session else "API token"
        self.store.audit.token_revoked(stored.userid, kind, found)
        return True

    def sign_out_everywhere(self, user_id: RecordId) -> None:
        now = utcnow()

        def work(conn: sa.Connection) -> None:
            conn.execute(
                fs_session.update()
                .where(fs_session.c.userid == user_id, fs_session.c.revokedon.is_(None))
                .values(revokedon=now)
            )

        self.store.transact(work)

    # -- API tokens -----------------------------------------------------------------------

    def create_api_token(
        self, user_id: RecordId, name: str = "api", *, days: int | None = None
    ) -> tuple[RecordId, str]:
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise BadRequest("an API token needs a name of 1 to 100 characters")
        if days is not None and (
            isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650
        ):
            raise BadRequest("an API token lasts 1 to 3650 days")
        token_id = uuid.uuid4()
        token = f"fsk.{token_id.hex}.{secrets.token_urlsafe(32)}"
        now = utcnow()

        def work(conn: sa.Connection) -> None:
            su = self.store.sql_table("systemuser")
            if (
                conn.execute(
                    sa.select(su.c.systemuserid).where(su.c.systemuserid == user_id)
                ).first()
                is None
            ):
                raise NotFound(f"systemuser {user_id} does not exist")
            conn.execute(
                fs_apitoken.insert().values(
                    tokenid=token_id,
                    userid=user_id,
                    name=name,
                    tokenhash=_digest(token),
                    createdon=now,
                    expireson=None if days is None else now + dt.timedelta(days=days),
                )
            )

        self.store.transact(work)
        return token_id, token

    def list_api_tokens(self, user_id: RecordId) -> list[dict[str, object]]:
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(
                    fs_apitoken.c.tokenid,
                    fs_apitoken.c.name,
                    fs_apitoken.c.createdon,
                    fs_apitoken.c.expireson,
                    fs_apitoken.c.revokedon,
                )
                .where(fs_apitoken.c.userid == user_id)
                .order_by(fs_apitoken.c.createdon)
            ).mappings()
            return [dict(r) for r in rows]

    def revoke_api_token(self, user_id: RecordId, token_id: RecordId) -> None:
        def work(conn: sa.Connection) -> int:
            done: int = conn.execute(
                fs_apitoken.update()
                .where(fs_apitoken.c.tokenid == token_id, fs_apitoken.c.userid == user_id)
                .values(revokedon=utcnow())
            ).rowcount
            return done

        done = self.store.transact(work)
        if not done:
            raise NotFound(f"API token {token_id} does not exist")
        self.store.audit.token_revoked(user_id, "API token", token_id)

    # -- every request --------------------------------------------------------------------

    def _decode(self, token: str) -> dict[str, str]:
        try:
            claims: dict[str, str] = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "sid"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the access token has expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid access token") from None
        if claims.get("typ") != "access":
            raise Unauthorized("invalid access token")
        return claims

    def authenticate(self, token: str, conn: sa.Connection | None = None) -> RecordId:
        """The user a bearer token belongs to; raises :class:`Unauthorized` otherwise. The
        user's enabled state is checked when the security context is loaded. ``conn``: read
        in this transaction (the request's, which goes on to load the caller's context)."""
        if conn is None:
            with self.store.read() as c:
                return self.check(token, c)[0]
        return self.check(token, conn)[0]

    def check(self, token: str, conn: sa.Connection) -> tuple[RecordId, Stamp]:
        """:meth:`authenticate`, with the security context's stamp
        (:func:`~fieldsync.security.context.context_stamp`) read by the same statement."""
        now = utcnow()
        api = _split(token, "fsk")
        if api is not None:
            row = conn.execute(API_TOKEN, {"tokenid": api[0]}).first()
            if row is None or not hmac.compare_digest(row.tokenhash, _digest(token)):
                raise Unauthorized("invalid API token")
            if row.revokedon is not None:
                raise Unauthorized("the API token has been revoked")
            if row.expireson is not None and row.expireson <= now:
                raise Unauthorized("the API token has expired")
            user_id: RecordId = row.userid
            return user_id, stamp_of(row[4:])
        session_id, user = self._claims(token)
        revoked = conn.execute(SESSION_STATE, {"sessionid": session_id}).first()
        if revoked is None or revoked.userid != user:
            raise Unauthorized("invalid access token")
        if revoked.revokedon is not None:
            if self._disabled(user, conn):
                raise Unauthorized("this user is disabled")
            raise Unauthorized("the session has been revoked")
        return user, stamp_of(revoked[2:])

    def _claims(self, token: str) -> tuple[uuid.UUID, RecordId]:
        """The session and the user an access token names (its signature and expiry
        checked)."""
        claims = self._decode(token)
        try:
            return uuid.UUID(hex=claims["sid"]), uuid.UUID(claims["sub"])
        except ValueError:
            raise Unauthorized("invalid access token") from None

    def _disabled(self, user: RecordId, conn: sa.Connection) -> bool:
        su = self.store.sql_table("systemuser")
        return bool(
            conn.execute(sa.select(su.c.isdisabled).where(su.c.systemuserid == user)).scalar()
        )
