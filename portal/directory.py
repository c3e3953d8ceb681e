"""Who may act for which address: the gateway's LDAP directory (docs/ldap.md), read as cn=reader.

A person acts for every address of their entry under ou=people (their own and
their aliases) and for every list and role address whose entry names them as
an owner. The portal asks on every request, so a change in the directory
(an owner removed from a list) takes effect at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ldap3
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from portal.config import Ldap, read_secret

TIMEOUT = 10


class DirectoryError(Exception):
    """The directory did not answer: the request fails (503) rather than showing too much or too little."""


@dataclass(frozen=True)
class Owner:
    """Who gets the digest of an address: a person's own entry, or the owners of a list or role."""

    uids: tuple[str, ...]
    addresses: dict[str, tuple[str, ...]]  # uid -> that person's addresses


class Directory:
    def __init__(self, settings: Ldap):
        self.settings = settings
        self.server = ldap3.Server(settings.uri, connect_timeout=TIMEOUT)

    def _connection(self) -> ldap3.Connection:
        try:
            return ldap3.Connection(
                self.server,
                self.settings.reader_dn,
                read_secret(self.settings.reader_password_file),
                auto_bind=True,
                receive_timeout=TIMEOUT,
                read_only=True,
            )
        except ldap3.core.exceptions.LDAPException as err:
            raise DirectoryError(f"cannot bind to {self.settings.uri} as {self.settings.reader_dn}: {err}") from None

    def person_dn(self, uid: str) -> str:
        return f"uid={escape_rdn(uid)},ou=people,{self.settings.base_dn}"

    def addresses(self, uid: str) -> frozenset[str]:
        """Every address `uid` may act for: their own, their aliases, and the lists and roles they own."""
        connection = self._connection()
        try:
            found: set[str] = set()
            connection.search(
                f"ou=people,{self.settings.base_dn}",
                f"(uid={escape_filter_chars(uid)})",
                attributes=["mailLocalAddress"],
            )
            for entry in connection.response or []:
                found.update(_values(entry, "mailLocalAddress"))
            connection.search(
                self.settings.base_dn,
                f"(owner={escape_filter_chars(self.person_dn(uid))})",
                attributes=["mailLocalAddress"],
            )
            for entry in connection.response or []:
                found.update(_values(entry, "mailLocalAddress"))
            return frozenset(address.lower() for address in found)
        except ldap3.core.exceptions.LDAPException as err:
            raise DirectoryError(f"cannot search {self.settings.uri}: {err}") from None
        finally:
            connection.unbind()

    def owners(self, addresses: list[str]) -> dict[str, Owner]:
        """address -> who manages it (a person, or a list's or role's owners) with their addresses."""
        connection = self._connection()
        try:
            result: dict[str, Owner] = {}
            people: dict[str, tuple[str, ...]] = {}

            def person(uid: str) -> tuple[str, ...]:
                if uid not in people:
                    connection.search(
                        f"ou=people,{self.settings.base_dn}",
                        f"(uid={escape_filter_chars(uid)})",
                        attributes=["mailLocalAddress"],
                    )
                    people[uid] = tuple(
                        sorted(a.lower() for e in connection.response or [] for a in _values(e, "mailLocalAddress"))
                    )
                return people[uid]

            for address in addresses:
                connection.search(
                    self.settings.base_dn,
                    f"(mailLocalAddress={escape_filter_chars(address)})",
                    attributes=["uid", "owner"],
                )
                uids: list[str] = []
                for entry in connection.response or []:
                    uids += _values(entry, "uid")
                    uids += [_uid_of(dn) for dn in _values(entry, "owner")]
                uids = sorted({uid for uid in uids if uid})
                if uids:
                    result[address] = Owner(tuple(uids), {uid: person(uid) for uid in uids})
            return result
        except ldap3.core.exceptions.LDAPException as err:
            raise DirectoryError(f"cannot search {self.settings.uri}: {err}") from None
        finally:
            connection.unbind()


def _values(entry: dict[str, object], attribute: str) -> list[str]:
    if entry.get("type") != "searchResEntry":
        return []
    attributes: Any = entry.get("attributes") or {}  # ldap3's case-insensitive dict
    value = attributes.get(attribute, [])
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _uid_of(dn: str) -> str:
    """'uid=mrossi,ou=people,...' -> 'mrossi'."""
    first = dn.split(",", 1)[0]
    name, _, value = first.partition("=")
    return value.strip() if name.strip().lower() == "uid" else ""
