"""mailgw sync: a site's own address list, fetched over authenticated HTTPS into sources/<domain>.yaml.

synced: the generated file (header, digest, validators); sitelist: the
exchange format (CSV, JSON) read into addresses; fetch: the HTTPS client;
domain: one domain synced from fetch to plan; propose: a branch and a commit
per domain. docs/sync-format.md describes the format for sites.
"""
