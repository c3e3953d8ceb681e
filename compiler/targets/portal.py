"""The quarantine portal's configuration: out/portal/portal.json, read by portal/ (docs/portal-operators.md).

One source of truth: the domains the gateway serves and the retention of each
domain and direction come from the resolved filter policy of the Fleet; the
ingest path is the path of quarantine.url, which Rspamd posts to; the LDAP
base DN is the directory's. Secrets are never here: the file names where
they are on the node (password files, the database URL, the session key).

JSON has no comments, so the header is the value of the first key,
'_generated'. Keys are sorted; the same declarations give the same bytes.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from compiler.fleet import Fleet
from compiler.model import PortalSettings

REFERENCES = ("RFC 8259 (JSON)", "docs/portal-operators.md")

GENERATED = "by 'mailgw build' from gateway.yaml and domains/*.yaml; do not edit"
PATH = "portal/portal.json"
# The gateway's LDAP reader identity (docs/ldap.md): a simple bind, its password in a file on the node.
READER_RDN = "cn=reader"


def artifacts(fleet: Fleet) -> dict[str, bytes]:
    settings = fleet.gateway.portal
    if settings is None:
        return {}
    document = configuration(fleet, settings)
    return {PATH: (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode("ascii")}


def release_address(settings: PortalSettings) -> tuple[str, int]:
    """'127.0.0.1:10026' -> ('127.0.0.1', 10026); '[::1]:10026' -> ('::1', 10026)."""
    host, _, port = settings.release_service.rpartition(":")
    return host.strip("[]"), int(port)


def configuration(fleet: Fleet, settings: PortalSettings) -> dict[str, Any]:
    gateway = fleet.gateway
    defaults = fleet.default_filters
    assert defaults is not None  # build_fleet always resolves the gateway's own policy
    host, port = release_address(settings)
    service = gateway.quarantine
    return {
        "_generated": GENERATED,
        "public_url": settings.public_url.rstrip("/"),
        "oidc": {
            "issuer": settings.oidc_issuer.rstrip("/"),
            "client_id": settings.oidc_client_id,
            "client_secret_file": settings.oidc_client_secret_file,
            "uid_claim": settings.uid_claim,
            "scopes": settings.oidc_scopes,
        },
        "operators": sorted(set(settings.operators)),
        "ldap": {
            "uri": settings.ldap_uri,
            "base_dn": gateway.ldap.base_dn,
            "reader_dn": f"{READER_RDN},{gateway.ldap.base_dn}",
            "reader_password_file": settings.ldap_reader_password_file,
        },
        "release": {"host": host, "port": port},
        "ingest": {
            # None: gateway.yaml names no quarantine service, so nothing posts to the portal.
            "path": (urlsplit(service.url).path or "/") if service is not None else None,
            "user": settings.ingest_user,
            "password_file": settings.ingest_password_file,
        },
        "digest_sender": settings.digest_sender,
        "max_message_bytes": settings.max_message_bytes,
        "store_directory": settings.store_directory,
        "database_url_file": settings.database_url_file,
        "session_secret_file": settings.session_secret_file,
        "domains": {
            domain.name: {
                "inbound": fleet.filters[domain.name].inbound.retention_days,
                "outbound": fleet.filters[domain.name].outbound.retention_days,
            }
            for domain in fleet.domains
        },
        "default_retention": {"inbound": defaults.inbound.retention_days, "outbound": defaults.outbound.retention_days},
        # People choose their national aliases on the portal, which commits the choice in this clone
        # through 'mailgw national choose' (docs/national-aliases.md); None: no national domain.
        "national": {"domain": fleet.national, "repository": settings.repository} if fleet.national else None,
    }
