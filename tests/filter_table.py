"""What the bundled fleet's filters do to a message, written out by hand from domains/*.yaml and gateway.yaml.

docs/filtering.md is the rule; this table is its result for the bundled
fleet, worked out by hand, so that the tests that scan mail with a real
Rspamd (tests/test_rspamd_scan.py) and send it through a real Postfix
(tests/test_filtering_e2e.py) never take an expected outcome from the
compiler. A change to a bundled domain's filters changes this table.

gateway.yaml:  inbound  header 5, subject 7 '[SPAM] %s', reject 15; virus reject; quarantine 30 days
               outbound reject 10 (the sender is told); virus reject
cnaf:          inbound  subject 6 '***SPAM*** %s', never reject
tifpa:         inbound  quarantine from 10; virus quarantine
               outbound refused spam quarantined (the sender is not told), kept 14 days
the others:    the gateway's
"""

from __future__ import annotations

DEFAULTS = "(no served domain)"  # mail of no served domain: the gateway's own policy
DOMAINS = (
    "cnaf.example.org",
    "example.it",
    "ge.example.org",
    "lab.tifpa.example.org",
    "lnf.example.org",
    "tifpa.example.org",
    "xn--citt-3na.example.org",
)
OUTCOMES = ("deliver", "add_header", "rewrite_subject", "quarantine", "reject")

_GATEWAY_INBOUND = [(2.5, "deliver"), (6, "add_header"), (11, "rewrite_subject"), (17, "reject")]
_GATEWAY_OUTBOUND = [(5, "deliver"), (12, "reject")]

# (domain, direction) -> [(score, outcome)], one score inside every band, and what GTUBE and a virus get.
SCORES: dict[tuple[str, str], list[tuple[float, str]]] = {
    ("cnaf.example.org", "inbound"): [(2.5, "deliver"), (5.5, "add_header"), (8, "rewrite_subject")],
    ("tifpa.example.org", "inbound"): [
        (2.5, "deliver"),
        (6, "add_header"),
        (8.5, "rewrite_subject"),
        (12.5, "quarantine"),
        (17, "reject"),
    ],
    ("tifpa.example.org", "outbound"): [(5, "deliver"), (12, "quarantine")],
}
GTUBE: dict[tuple[str, str], str] = {
    ("cnaf.example.org", "inbound"): "rewrite_subject",
    ("tifpa.example.org", "outbound"): "quarantine",
}
VIRUS: dict[tuple[str, str], str] = {("tifpa.example.org", "inbound"): "quarantine"}
SUBJECT: dict[tuple[str, str], str] = {("cnaf.example.org", "inbound"): "***SPAM*** %s"}
RETENTION_DAYS: dict[tuple[str, str], int] = {("tifpa.example.org", "outbound"): 14}

for _domain in (*DOMAINS, DEFAULTS):
    SCORES.setdefault((_domain, "inbound"), _GATEWAY_INBOUND)
    SCORES.setdefault((_domain, "outbound"), _GATEWAY_OUTBOUND)
    for _direction in ("inbound", "outbound"):
        GTUBE.setdefault((_domain, _direction), "reject")
        VIRUS.setdefault((_domain, _direction), "reject")
        SUBJECT.setdefault((_domain, _direction), "[SPAM] %s")
        RETENTION_DAYS.setdefault((_domain, _direction), 30)


def rows(direction: str) -> list[tuple[str, float | str, str]]:
    """(domain, a score or 'gtube' or 'virus', the outcome) for every domain and the defaults."""
    found: list[tuple[str, float | str, str]] = []
    for domain in (*DOMAINS, DEFAULTS):
        found += [(domain, score, outcome) for score, outcome in SCORES[(domain, direction)]]
        found += [(domain, "gtube", GTUBE[(domain, direction)]), (domain, "virus", VIRUS[(domain, direction)])]
    return found
