"""docs/examples/ldap-to-sync-csv.sh, the reference exporter: a real slapd's site tree in, a list sync accepts out."""

from __future__ import annotations

import os
import subprocess

import pytest

from compiler.sync import sitelist
from tests import slapd as slapd_module
from tests.conftest import REPO, SBIN_PATH
from tests.slapd import ROOT_PASSWORD, Slapd

EXPORTER = REPO / "docs/examples/ldap-to-sync-csv.sh"
BASE = "dc=tifpa,dc=example,dc=org"
SITE_TREE = f"""\
dn: {BASE}
objectClass: dcObject
objectClass: organization
dc: tifpa
o: TIFPA

dn: ou=people,{BASE}
objectClass: organizationalUnit
ou: people

dn: uid=mrossi,ou=people,{BASE}
objectClass: inetOrgPerson
uid: mrossi
cn: Mario Rossi
sn: Rossi
mail: Mario.Rossi@tifpa.example.org
mail: m.rossi@tifpa.example.org
mail: mario.rossi@physics.example.edu

dn: uid=lbianchi,ou=people,{BASE}
objectClass: inetOrgPerson
uid: lbianchi
cn: Laura Bianchi
sn: Bianchi
mail: laura.bianchi@tifpa.example.org

dn: uid=guest,ou=people,{BASE}
objectClass: inetOrgPerson
uid: guest
cn: A Guest
sn: Guest
mail: guest@elsewhere.example.net

dn: cn=staff,{BASE}
objectClass: groupOfNames
objectClass: inetLocalMailRecipient
cn: staff
member: uid=mrossi,ou=people,{BASE}
owner: uid=mrossi,ou=people,{BASE}
owner: uid=lbianchi,ou=people,{BASE}
businessCategory: list
mailLocalAddress: staff@tifpa.example.org

dn: cn=info,{BASE}
objectClass: groupOfNames
objectClass: inetLocalMailRecipient
cn: info
member: uid=lbianchi,ou=people,{BASE}
owner: uid=lbianchi,ou=people,{BASE}
businessCategory: role
mailLocalAddress: info@tifpa.example.org

dn: cn=g.verdi,{BASE}
objectClass: organizationalRole
objectClass: inetLocalMailRecipient
cn: g.verdi
mailLocalAddress: g.verdi@tifpa.example.org
mailRoutingAddress: giuseppe.verdi@example.net
"""


@pytest.mark.needs("slapd", "slapadd", "ldapsearch")
def test_the_reference_exporter_writes_a_list_sync_accepts(tmp_path, monkeypatch):
    # A site's directory has people as inetOrgPerson; the gateway's own LDAP does without that schema.
    monkeypatch.setattr(slapd_module, "SCHEMAS", (*slapd_module.SCHEMAS, "inetorgperson"))
    slapd = Slapd(BASE)
    try:
        loaded = slapd.slapadd(SITE_TREE.encode())
        assert loaded.returncode == 0, loaded.stderr.decode()
        slapd.start()
        done = subprocess.run(
            ["sh", str(EXPORTER), "-H", slapd.url, "-x", "-D", slapd.root_dn, "-w", ROOT_PASSWORD, "-b", BASE],
            env={**os.environ, "PATH": SBIN_PATH, "DOMAIN": "tifpa.example.org"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        slapd.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "address,kind,uid,owners",
        "info@tifpa.example.org,role,,lbianchi",
        "laura.bianchi@tifpa.example.org,person,lbianchi,",
        "m.rossi@tifpa.example.org,alias,mrossi,",
        "mario.rossi@tifpa.example.org,person,mrossi,",
        "staff@tifpa.example.org,list,,mrossi lbianchi",
        "",
        "address,target",
        "g.verdi@tifpa.example.org,giuseppe.verdi@example.net",
    ]
    site = sitelist.read(done.stdout, "csv", "https://ldap.tifpa.example.org/addresses.csv", "tifpa.example.org")
    assert site.findings == [] and len(site.addresses) == 6
