"""`mailgw-portal digest`: mail each address with newly held messages a list of them, with a link to sign in.

Per address: a person's own addresses (and aliases) get their digest at that
address; a list's or role's digest goes to each of its owners (at the
owner's first address in alphabetical order). The link leads to the portal's
sign-in, never to an action: nothing in a digest releases or deletes mail.
Items go in one digest only, whichever node sends it (claimed first, given back if the MX
did not take the digest).
"""

from __future__ import annotations

import email.message
import email.utils
import smtplib
from pathlib import Path
from urllib.parse import urlencode

import jinja2

from portal.config import Config
from portal.directory import Directory, Owner
from portal.store import Row, Store

HERE = Path(__file__).resolve().parent
TIMEOUT = 60


def digest_recipients(address: str, owner: Owner) -> list[str]:
    for uid in owner.uids:
        if address in owner.addresses.get(uid, ()):
            return [address]  # the person's own address (or alias)
    return sorted({owner.addresses[uid][0] for uid in owner.uids if owner.addresses.get(uid)})


def compose(config: Config, address: str, rows: list[Row], to: list[str]) -> email.message.EmailMessage:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=False)
    days = max((row.recipient.expires_at - row.recipient.received_at).days for row in rows)
    body = environment.get_template("digest.txt").render(
        rows=rows, address=address, link=f"{config.public_url}/?{urlencode({'address': address})}", days=days
    )
    message = email.message.EmailMessage()
    message["From"] = config.digest_sender
    message["To"] = ", ".join(to)
    count = len(rows)
    message["Subject"] = f"Quarantine: {count} new message{'' if count == 1 else 's'} held for {address}"
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain=config.digest_sender.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    return message


def run(config: Config, store: Store, directory: Directory) -> tuple[int, int]:
    """Send every pending digest -> (digests sent, addresses without anyone to tell).

    Safe on every node at once: the items are claimed before they are sent, and what could not be
    sent is given back for the next run.
    """
    pending = store.claim_unnotified()
    if not pending:
        return 0, 0
    sent = unowned = 0
    done: set[str] = set()
    try:
        owners = directory.owners(sorted(pending))
        with smtplib.SMTP(config.release_host, config.release_port, timeout=TIMEOUT) as smtp:
            for address, rows in sorted(pending.items()):
                owner = owners.get(address)
                to = digest_recipients(address, owner) if owner else []
                if to:
                    message = compose(config, address, rows, to)
                    smtp.send_message(message, from_addr=config.digest_sender, to_addrs=to)
                    sent += 1
                else:
                    unowned += 1  # an external alias or an outbound recipient: operators see it in the portal
                done.add(address)
    finally:
        store.unclaim(row.recipient.id for address, rows in pending.items() if address not in done for row in rows)
    return sent, unowned
