"""Released mail goes back into the MX through its release service (gateway.yaml portal.release_service).

That smtpd has no milter (a released message is not filtered or quarantined
again) and accepts only the portal's hosts. The message keeps its original
envelope sender; its recipients are only those the user may act for.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Callable

TIMEOUT = 60


class ReleaseError(Exception):
    """The MX did not take the message: nothing is marked released."""


# (envelope sender, recipients, message) -> the recipients the MX refused; raises ReleaseError if it took none.
Send = Callable[[str, list[str], bytes], set[str]]


def sender(host: str, port: int) -> Send:
    def send(envelope_from: str, recipients: list[str], data: bytes) -> set[str]:
        try:
            with smtplib.SMTP(host, port, timeout=TIMEOUT, local_hostname=_helo()) as smtp:
                refused = smtp.sendmail(envelope_from, recipients, data)
        except (OSError, smtplib.SMTPException) as err:
            # SMTPRecipientsRefused (every recipient refused) is one of these: nothing was queued.
            raise ReleaseError(f"the MX at {host}:{port} did not take the message: {err}") from None
        return {address.lower() for address in refused}

    return send


def _helo() -> str:
    name = socket.getfqdn()
    return name if name and "." in name else "localhost.localdomain"
