"""The user quarantine portal: Rspamd posts held mail here; people sign in with AAI and release or delete it.

An ASGI application (Starlette) with its own entry point, `mailgw-portal`.
It is configured only from out/portal/portal.json (written by `mailgw build`)
and the secret files that file names; it never imports the compiler.
"""
