"""The conflict decision of sync, as pure functions: what an offline update writes on the
server (:func:`decide`), and what a device does with the server's answer (:func:`settle`).

An update carries the changed columns only and the version of the row the device last saw
(its *base version*). The server knows which columns changed since that version. Then:

- **last write wins** (the default, the Dataverse rule): the device's columns are written; a
  concurrent change to *another* column survives, since only changed columns travel;
- **server wins** (a table listed in the ``sync.server_wins`` setting): a change to a column the
  server changed since the base version is rejected (a conflict sync error, type 0), and the
  device reverts to the server's row;
- **a resolver** (``PluginRegistry.resolve_conflicts``) registered for the table decides what to
  write when the columns clash; it may write nothing (``{}``) or reject by raising. A resolver
  takes precedence over server wins.

A create has no base version and a delete carries no columns: neither conflicts. Nothing here
touches a database or the network; the server's upload (:mod:`fieldsync.sync.upload`) gathers
the facts, and the device SDK (:mod:`fieldsync.client`) applies :func:`settle`'s answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fieldsync.sync.protocol import ChangeAnswer, SyncErrorInfo

Resolver = Callable[[Mapping[str, Any], list[str]], Mapping[str, Any]]
"""``resolver(server_row, clashing_columns) -> values to write`` (the device's values are known
to whoever builds it)."""


@dataclass(frozen=True)
class Policy:
    """How a table settles an update to columns the server changed since the base version."""

    server_wins: bool = False
    resolver: Resolver | None = None

    @property
    def last_write_wins(self) -> bool:
        """No conflict can change what is written: updates need no look at the server's
        history, and may be written in batches."""
        return not self.server_wins and self.resolver is None

    @property
    def name(self) -> str:
        if self.resolver is not None:
            return "resolver"
        return "server-wins" if self.server_wins else "last-write-wins"


LAST_WRITE_WINS = Policy()


@dataclass(frozen=True)
class ServerRow:
    """What the server knows of the row: the columns changed after the base version, and
    (for a resolver only) the row as it is now."""

    changed: frozenset[str]
    values: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """``write`` is what the update writes (None: the change is rejected for ``reason``);
    ``clash`` the columns both sides changed, sorted."""

    write: Mapping[str, Any] | None
    clash: tuple[str, ...] = ()
    reason: str | None = None
    resolved: bool = False  # a resolver chose ``write``

    @property
    def rejected(self) -> bool:
        return self.write is None


def needs_history(policy: Policy, values: Mapping[str, Any], base_version: int | None) -> bool:
    """Whether :func:`decide` depends on the server's changes since ``base_version`` (else the
    caller need not look them up)."""
    return base_version is not None and bool(values) and not policy.last_write_wins


def needs_row(policy: Policy, changed: frozenset[str], values: Mapping[str, Any]) -> bool:
    """Whether :func:`decide` needs the server's current row (a resolver with a clash)."""
    return policy.resolver is not None and not changed.isdisjoint(values)


def decide(
    policy: Policy,
    server: ServerRow,
    values: Mapping[str, Any],
    base_version: int | None,
) -> Outcome:
    """What an update of ``values`` (the changed columns, from a device that last saw
    ``base_version``) writes, under ``policy``, given what changed on the ``server``."""
    if not needs_history(policy, values, base_version):
        return Outcome(dict(values))
    clash = tuple(sorted(server.changed.intersection(values)))
    if not clash:
        return Outcome(dict(values))
    if policy.resolver is not None:
        if server.values is None:
            raise ValueError("a conflict resolver needs the server's current row")
        decided = policy.resolver(server.values, list(clash))
        return Outcome(dict(decided), clash, resolved=True)
    return Outcome(
        None,
        clash,
        f"{', '.join(clash)} changed on the server since version {base_version}, and this "
        "table keeps the server's value",
    )


@dataclass(frozen=True)
class Settlement:
    """What a device does with the answer to one of its changes:

    - ``keep``: applied; the local row stays, at ``version`` (None: unchanged, or deleted);
    - ``revert``: rejected; the local row becomes the server's ``row``, the device's later
      unsent changes to it stay on top, and ``error`` is kept as a sync error;
    - ``drop``: rejected and the row is not (or no longer) the device's: it goes, and so do
      the device's later changes to it other than its create; ``error`` is kept.
    """

    kind: Literal["keep", "revert", "drop"]
    version: int | None = None
    row: dict[str, Any] | None = None
    error: SyncErrorInfo | None = None


def settle(answer: ChangeAnswer) -> Settlement:
    if answer["status"] == "applied":
        return Settlement("keep", version=answer.get("version"))
    row = answer.get("row")
    error = answer["error"]
    if row is None:
        return Settlement("drop", error=error)
    return Settlement("revert", row=row, error=error)
