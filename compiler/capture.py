"""Capture and notify: which addresses are captured, and the Postfix addresses that carry a capture.

A domain declares addresses whose every message is copied to a destination,
with a short notice (sender, subject, date, message id; never the body) to
declared people, while the original is delivered as usual (docs/site-admins.md).
On the MX (postconf(5) recipient_bcc_maps, virtual(5), transport(5), pipe(8)):

- recipient_bcc_maps gives every captured address, and every address whose
  mail the MX turns into mail for it (a national alias, an external alias),
  one blind copy to GROUP@capture.mailgw.invalid, GROUP being the captured
  address with '=' for '@' (no local part or domain of the grammar has one);
- virtual_alias expands GROUP@capture.mailgw.invalid into the destination and
  one NOTIFY=DOMAIN@notice.mailgw.invalid per person to tell;
- transport sends notice.mailgw.invalid to the pipe service that runs the
  notifier (deploy/puppet/mailgw/files/capture-notify), once per person: it
  reads the headers, and submits the notice to a loopback smtpd whose cleanup
  has no recipient_bcc_maps, so a notice is never captured; a notifier that
  fails leaves its one recipient deferred, never the original or the copy.

The names end in .invalid (RFC 2606): nothing outside the MX ever sees them.
"""

from __future__ import annotations

from collections.abc import Iterable

REFERENCES = ("postconf(5) recipient_bcc_maps", "virtual(5)", "transport(5)", "pipe(8)", "RFC 2606")

CAPTURE_DOMAIN = "capture.mailgw.invalid"
NOTICE_DOMAIN = "notice.mailgw.invalid"
# master.cf: the pipe service that runs the notifier, and the cleanup of the notice service.
NOTICE_TRANSPORT = "mailgw_notice"
NO_CAPTURE_CLEANUP = "mailgw_nocapture"
# Where Puppet installs the notifier on every MX node (deploy/puppet/mailgw/manifests/postfix.pp).
NOTIFIER = "/usr/local/sbin/mailgw-capture-notify"
# pipe(8) refuses root and the mail system's owner: the notifier needs no privilege at all.
NOTIFIER_USER = "nobody"


def encode(address: str) -> str:
    """'dg@lnf.example.org' -> 'dg=lnf.example.org': an address as the local part of an internal one."""
    return address.replace("@", "=")


def group_address(captured: str) -> str:
    """The blind-copy recipient of a captured address."""
    return f"{encode(captured)}@{CAPTURE_DOMAIN}"


def notice_address(person: str) -> str:
    """The internal recipient that makes the notifier tell `person`."""
    return f"{encode(person)}@{NOTICE_DOMAIN}"


def reaching(captured: Iterable[str], routes: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Every address whose mail reaches a captured address (itself included) -> that captured address.

    `routes` is what the MX rewrites an address into (virtual aliases). Postfix
    adds one blind copy per recipient, so an address reaching two captured
    addresses gets the copy of the first in order.
    """
    into: dict[str, list[str]] = {}
    for source, targets in routes.items():
        for target in targets:
            into.setdefault(target.lower(), []).append(source)
    found: dict[str, str] = {}
    for address in sorted(captured):
        waiting = [address]
        while waiting:
            current = waiting.pop()
            if current in found:
                continue
            found[current] = address
            waiting += into.get(current, [])
    return found
