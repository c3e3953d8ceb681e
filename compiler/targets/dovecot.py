"""Dovecot's auth service for the submission services: out/dovecot/ (docs/submission.md).

On an MX node Dovecot does one thing: Postfix's smtpd asks it over a unix
socket (smtpd_sasl_type = dovecot) whether a login's password is right, and
Dovecot answers by binding to the AAI's LDAP directory as that user with that
password (auth_bind). No mailbox, no IMAP, POP3 or LMTP listener: the file is a
whole dovecot.conf, replacing Debian's (whose conf.d would also enable PAM
logins of the node's own accounts).

Formats: dovecot.conf(5)-style settings for Dovecot 2.3, and the LDAP passdb's
own settings file (Dovecot's AuthDatabase/LDAP: one 'key = value' a line, '#'
comments, `!include`). Every value comes from gateway.yaml's submission section
through compiler.values: LDAP URIs, plain DNs, a filter with '%u' only, node
paths; none carries a space where Dovecot would split, a '#', a quote or a '%'
variable but '%u'. Login names are limited to the characters of an AAI uid
(auth_username_chars), so Dovecot's expansion of '%u' into a filter or a DN
cannot add syntax either. No secret is here: a search identity's password is a
file on the node that the LDAP settings include.
"""

from __future__ import annotations

from compiler.fleet import Fleet
from compiler.model import AaiDirectory, SubmissionSettings
from compiler.targets.postfix import HEADER

REFERENCES = (
    "https://doc.dovecot.org/2.3/configuration_manual/authentication/ldap/",
    "https://doc.dovecot.org/2.3/configuration_manual/authentication/ldap_bind/",
    "https://doc.dovecot.org/2.3/admin_manual/postfix_sasl/",
    "RFC 4516 (LDAP URLs)",
    "RFC 4515 (LDAP filters)",
)

# Where Puppet puts the files on the node (mailgw::dovecot); dovecot.conf names the LDAP settings there.
CONFIG_DIRECTORY = "/etc/dovecot"
CONFIG = "dovecot.conf"
LDAP_SETTINGS = "mailgw-aai-ldap.conf.ext"
BASE_DIRECTORY = "/run/dovecot"
# An AAI uid's characters (values.UID_PATTERN), in either case: Dovecot refuses a login with any other.
USERNAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


def artifacts(fleet: Fleet) -> dict[str, bytes]:
    settings = fleet.gateway.submission
    if settings is None:
        return {}
    return {
        f"dovecot/{CONFIG}": dovecot_conf(settings).encode("ascii"),
        f"dovecot/{LDAP_SETTINGS}": ldap_settings(settings.aai_directory).encode("ascii"),
    }


def dovecot_conf(settings: SubmissionSettings) -> str:
    return f"""{HEADER}\
# Dovecot on the MX nodes checks the passwords of the submission services' logins (docs/submission.md)
# against the AAI's directory, and does nothing else: no mailbox, no IMAP, POP3 or LMTP listener.
protocols =
ssl = no
base_dir = {BASE_DIRECTORY}

# PLAIN and LOGIN carry the password itself, which the directory checks by a bind as the user.
auth_mechanisms = plain login
# A login is an AAI uid: only its characters (no DN or filter syntax), looked up in lower case.
auth_username_chars = {USERNAME_CHARS}
auth_username_format = %Lu
# Only over TLS: Postfix offers AUTH after STARTTLS (or on its TLS port) and tells Dovecot so.
disable_plaintext_auth = yes
# Every login asks the directory: a new password or a closed account counts at once.
auth_cache_size = 0
# A wrong password is answered after this delay, which slows down guessing.
auth_failure_delay = 2 secs

passdb {{
  driver = ldap
  args = {CONFIG_DIRECTORY}/{LDAP_SETTINGS}
}}

# Postfix's smtpd asks here (main.cf smtpd_sasl_path).
service auth {{
  unix_listener {listener_path(settings.auth_socket)} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""


def listener_path(socket: str) -> str:
    """Dovecot wants a socket in its base_dir named relative to it (doveconf warns otherwise)."""
    return socket.removeprefix(BASE_DIRECTORY + "/")


def ldap_settings(directory: AaiDirectory) -> str:
    """The LDAP passdb's settings: the directory, then how a login's entry is found and bound to."""
    lines = [
        HEADER.rstrip("\n"),
        "# The AAI's directory (gateway.yaml submission.aai_directory): a login is right when Dovecot can bind",
        "# as the user's entry with the password given (auth_bind); no password is ever read from it.",
        f"uris = {' '.join(directory.uris)}",
        "ldap_version = 3",
    ]
    if directory.uris[0].startswith("ldap://"):
        lines += ["# Passwords never cross the network in the clear: StartTLS on every connection.", "tls = yes"]
    if not directory.uris[0].startswith("ldapi://"):
        lines.append("tls_require_cert = hard")
    if directory.ca_file is not None:
        lines.append(f"tls_ca_cert_file = {directory.ca_file}")
    lines += [f"base = {directory.base}", "scope = subtree", "auth_bind = yes"]
    if directory.bind_template is not None:
        lines += [
            "# The user's entry is named by the login itself: no search.",
            f"auth_bind_userdn = {directory.bind_template}",
        ]
        return "\n".join(lines) + "\n"
    lines += [
        "# The user's entry is found by a search (exactly one must match), then bound to;",
        "# the login becomes the entry's uid.",
        f"pass_filter = {directory.user_filter}",
        "pass_attrs = uid=user",
    ]
    if directory.search_dn is not None and directory.search_password_file is not None:
        lines += [
            "# The search's own identity; its password is a file on the node ('dnpass = ...'), from Puppet.",
            f"dn = {directory.search_dn}",
            f"!include {directory.search_password_file}",
        ]
    return "\n".join(lines) + "\n"
