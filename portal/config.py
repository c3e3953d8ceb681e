"""out/portal/portal.json, as `mailgw build` writes it, and the secrets it names (files on the node)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """The configuration or a secret it names cannot be read: the portal does not start."""


@dataclass(frozen=True)
class Oidc:
    issuer: str
    client_id: str
    client_secret_file: str
    uid_claim: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class Ldap:
    uri: str
    base_dn: str
    reader_dn: str
    reader_password_file: str


@dataclass(frozen=True)
class National:
    """The national alias domain, and the clone of the gateway repository the portal commits choices in."""

    domain: str
    repository: str


@dataclass(frozen=True)
class Config:
    public_url: str
    oidc: Oidc
    operators: frozenset[str]
    ldap: Ldap
    release_host: str
    release_port: int
    ingest_path: str | None
    ingest_user: str
    ingest_password_file: str
    digest_sender: str
    max_message_bytes: int
    store_directory: str
    database_url_file: str
    session_secret_file: str
    # domain -> direction -> days
    retention: dict[str, dict[str, int]]
    default_retention: dict[str, int]
    national: National | None = None  # None: no national domain, no alias page

    def retention_days(self, domain: str, direction: str, fallback: int | None = None) -> int:
        """The retention of a domain's direction; a domain the gateway does not serve gets `fallback` or the default."""
        days = self.retention.get(domain, {}).get(direction)
        if days is not None:
            return days
        return fallback if fallback is not None else self.default_retention.get(direction, 30)

    def database_url(self) -> str:
        """The SQLAlchemy URL from its file; without the file, SQLite in the store directory."""
        path = Path(self.database_url_file)
        if path.exists():
            return read_secret(self.database_url_file)
        return f"sqlite:///{Path(self.store_directory) / 'quarantine.sqlite3'}"


def read_secret(path: str) -> str:
    """A secret file's content without its final newline."""
    try:
        value = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as err:
        raise ConfigError(f"cannot read the secret file {path}: {err.strerror}") from None
    if not value:
        raise ConfigError(f"the secret file {path} is empty")
    return value


def load(path: str | Path) -> Config:
    try:
        document: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read the portal configuration {path}: {err.strerror}") from None
    except ValueError as err:
        raise ConfigError(f"{path} is not JSON: {err}") from None
    try:
        oidc, ldap, ingest = document["oidc"], document["ldap"], document["ingest"]
        return Config(
            public_url=document["public_url"].rstrip("/"),
            oidc=Oidc(
                oidc["issuer"],
                oidc["client_id"],
                oidc["client_secret_file"],
                oidc["uid_claim"],
                # A portal.json of an out/ from before oidc_scopes (a revision put back): openid, as it was then.
                tuple(oidc.get("scopes", ["openid"])),
            ),
            operators=frozenset(document["operators"]),
            ldap=Ldap(ldap["uri"], ldap["base_dn"], ldap["reader_dn"], ldap["reader_password_file"]),
            release_host=document["release"]["host"],
            release_port=int(document["release"]["port"]),
            ingest_path=ingest["path"],
            ingest_user=ingest["user"],
            ingest_password_file=ingest["password_file"],
            digest_sender=document["digest_sender"],
            max_message_bytes=int(document["max_message_bytes"]),
            store_directory=document["store_directory"],
            database_url_file=document["database_url_file"],
            session_secret_file=document["session_secret_file"],
            retention={domain: dict(days) for domain, days in document["domains"].items()},
            default_retention=dict(document["default_retention"]),
            national=National(national["domain"], national["repository"])
            if (national := document.get("national"))
            else None,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{path} is not a portal configuration of 'mailgw build': {err!r}") from None
