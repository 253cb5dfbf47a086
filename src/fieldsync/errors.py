"""One error tree for everything a caller can get wrong.

    FieldsyncError                      500  0x80040216  (never raised for client input)
    ├── BadRequest                      400  0x80040203
    │   ├── ValidationError             400  (a value breaks a column's rules; names the column)
    │   │   ├── UnknownColumn           400  0x80060888
    │   │   ├── ReadOnlyColumn          400  0x80040203
    │   │   ├── MissingRequired         400  0x80040200
    │   │   ├── WrongType               400  0x80040203
    │   │   ├── StringTooLong           400  0x80044331
    │   │   ├── ValueOutOfRange         400  0x80044330
    │   │   ├── InvalidChoice           400  0x8004431A
    │   │   └── LookupNotFound          400  0x80040217
    │   ├── SchemaError                 400  0x80040203  (a bad table, column or relationship)
    │   ├── QueryError                  400  0x80040203  (bad FetchXML or OData; says where)
    │   ├── ProfileInvalid              400  0x80040203  (an offline profile breaks a rule;
    │   │                                                 names the profile and table)
    │   └── ConfigurationError          400  0x80040203
    ├── Unauthorized                    401  0x8004AD03
    ├── Forbidden                       403  0x80040220
    │   └── OfflineNotAvailable         403  0x80040220  (the app cannot be taken offline by
    │                                                     this user; says why)
    ├── NotFound                        404  0x80040217
    │   ├── TableNotFound               404  0x80060888
    │   └── RecordNotFound              404  0x80040217
    ├── MethodNotAllowed                405  0x80060888
    ├── ChangesExpired                  410  0x80060401  (a sync cursor older than the log;
    │                                                    in fieldsync.store.changes)
    ├── PreconditionFailed              412  0x80040237  (duplicate key, version mismatch)
    ├── PayloadTooLarge                 413  0x80040203
    ├── RangeNotSatisfiable             416  0x80040203  (a byte range or chunk offset that
    │                                                    does not fit the file; says where)
    ├── PluginError                     400  0x80040265  (a plugin rejected the operation)
    ├── TooManyRequests                 429  0x80072322
    └── ServiceUnavailable              503  0x80040216  (try again after Retry-After seconds)
        └── WriteConflict               503  0x80040216  (the database kept aborting a write
                                                          to break deadlocks; nothing written)

Every error renders as ``{"error": {"code": "...", "message": "..."}}`` with its status.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FieldsyncError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "0x80040216"
    # the row of a batched write it was raised for, when the write knows: a caller that
    # sent many rows can set that one aside and write the others
    row_id: Any = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(FieldsyncError):
    status = 400
    code = "0x80040203"


class ValidationError(BadRequest):
    """A value breaks the rules of one column of one table."""

    def __init__(self, table: str, column: str, message: str) -> None:
        super().__init__(f"{table}.{column}: {message}")
        self.table = table
        self.column = column


class UnknownColumn(ValidationError):
    code = "0x80060888"


class ReadOnlyColumn(ValidationError):
    pass


class MissingRequired(ValidationError):
    code = "0x80040200"


class WrongType(ValidationError):
    pass


class StringTooLong(ValidationError):
    code = "0x80044331"


class ValueOutOfRange(ValidationError):
    code = "0x80044330"


class InvalidChoice(ValidationError):
    code = "0x8004431A"


class LookupNotFound(ValidationError):
    code = "0x80040217"


class SchemaError(BadRequest):
    pass


class ConfigurationError(BadRequest):
    pass


class QueryError(BadRequest):
    """A query that cannot be parsed or does not fit the schema; the message says where
    (``line 3, column 12`` in FetchXML, ``at character 17`` in OData)."""


class ProfileInvalid(BadRequest):
    """A mobile offline profile breaks one or more rules; ``problems`` lists each one, and
    ``line`` is set when the profile came from a file (1-based)."""

    def __init__(self, message: str, problems: tuple[str, ...] = (), line: int | None = None):
        super().__init__(message if line is None else f"line {line}: {message}")
        self.problems = problems or (message,)
        self.line = line


class Unauthorized(FieldsyncError):
    status = 401
    code = "0x8004AD03"


class Forbidden(FieldsyncError):
    status = 403
    code = "0x80040220"


class OfflineNotAvailable(Forbidden):
    """The user cannot take this app offline: it is not offline-enabled, has no published
    profile, is restricted to others, or the user may not read offline profiles."""


class NotFound(FieldsyncError):
    status = 404
    code = "0x80040217"


class TableNotFound(NotFound):
    code = "0x80060888"

    def __init__(self, table: str) -> None:
        super().__init__(f"table {table!r} does not exist")
        self.table = table


class RecordNotFound(NotFound):
    def __init__(self, table: str, record_id: object) -> None:
        super().__init__(f"{table} with id {record_id} does not exist")
        self.table = table
        self.record_id = record_id


class MethodNotAllowed(FieldsyncError):
    status = 405
    code = "0x80060888"


class PreconditionFailed(FieldsyncError):
    status = 412
    code = "0x80040237"


class PayloadTooLarge(FieldsyncError):
    status = 413


class RangeNotSatisfiable(FieldsyncError):
    status = 416
    code = "0x80040203"


class PluginError(FieldsyncError):
    """Raised by a plugin to reject an operation; the whole transaction rolls back.

    >>> raise PluginError("credit limit exceeded", code="CREDIT_LIMIT")
    """

    status = 400
    code = "0x80040265"


class TooManyRequests(FieldsyncError):
    status = 429
    code = "0x80072322"

    def __init__(
        self, message: str, *, retry_after: int = 1, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = dict(headers or {})  # more headers for the answer (service protection)


class ServiceUnavailable(FieldsyncError):
    """The server cannot answer now but will soon: nothing was done, and the client should
    try again after ``retry_after`` seconds (sent as ``Retry-After``)."""

    status = 503
    code = "0x80040216"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WriteConflict(ServiceUnavailable):
    """A write the database aborted to break a deadlock (or a serialization failure) on
    every attempt (:meth:`fieldsync.store.store.Store.transact`); it was rolled back."""
