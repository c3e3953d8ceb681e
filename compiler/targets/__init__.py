"""Stage 4, targets: Fleet -> {relative path in out/: bytes}, one module per consumer."""

from __future__ import annotations

from compiler.fleet import Fleet
from compiler.targets import dns, dovecot, ldap, portal, postfix, postfix_config, rspamd, slapd, srs

TARGETS = (postfix, postfix_config, rspamd, ldap, slapd, portal, dns, srs, dovecot)


def render(fleet: Fleet) -> dict[str, bytes]:
    artifacts: dict[str, bytes] = {}
    for target in TARGETS:
        artifacts.update(target.artifacts(fleet))
    return artifacts
