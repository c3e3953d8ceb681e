"""out/portal/portal.json and the portal's lines in the Rspamd and Postfix configuration, from the declarations.

Expected values come from the YAML (read here with PyYAML) or are written by
hand; the Rspamd side is checked by rspamadm, the Postfix side by postconf.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from compiler.pipeline import compile_repository
from tests import rspamd_env
from tests.conftest import REPO, domain_yaml, program

GATEWAY = yaml.safe_load((REPO / "gateway.yaml").read_text())
PORTAL = (
    "portal:\n  public_url: https://q.example.org\n  oidc_issuer: https://aai.example.org/oidc/\n"
    "  oidc_client_id: mailgw-q\n  digest_sender: quarantine@example.org\n  operators: [zed, adam]\n"
)
QUARANTINE = "quarantine: {url: 'https://q.example.org:8443/ingest/v1'}\n"
FILTERS = """\
filters:
  inbound:
    quarantine: {enabled: true, retention_days: 21}
  outbound:
    quarantine: {enabled: true, retention_days: 5}
    notify_sender: false
"""


def test_the_bundled_portal_configuration_comes_from_gateway_yaml_and_the_domains():
    document = json.loads((REPO / "out" / "portal" / "portal.json").read_text())
    portal, ldap = GATEWAY["portal"], GATEWAY["ldap"]
    assert document["public_url"] == portal["public_url"]
    assert document["oidc"]["issuer"] == portal["oidc_issuer"]
    assert document["oidc"]["client_id"] == portal["oidc_client_id"]
    assert document["oidc"]["scopes"] == portal["oidc_scopes"]
    assert document["operators"] == sorted(portal["operators"])
    assert document["ldap"]["base_dn"] == ldap["base_dn"]
    assert document["ldap"]["reader_dn"] == f"cn=reader,{ldap['base_dn']}"
    assert document["ingest"]["path"] == "/" + GATEWAY["quarantine"]["url"].split("/", 3)[3]
    host, port = portal["release_service"].split(":")
    assert document["release"] == {"host": host, "port": int(port)}
    domains = {yaml.safe_load(p.read_text())["domain"] for p in (REPO / "domains").glob("*.yaml")}
    assert set(document["domains"]) == {d.encode("idna").decode() for d in domains}
    tifpa = yaml.safe_load((REPO / "domains" / "tifpa.example.org.yaml").read_text())
    outbound_days = tifpa["filters"]["outbound"]["quarantine"]["retention_days"]
    assert document["domains"]["tifpa.example.org"] == {
        "inbound": GATEWAY["filters"]["inbound"]["quarantine"]["retention_days"],
        "outbound": outbound_days,
    }


def test_no_secret_and_only_file_names(make_repo):
    compiled = compile_repository(make_repo({"domains/tifpa.example.org.yaml": domain_yaml()}, gateway=_gateway()))
    document = json.loads(compiled.artifacts["portal/portal.json"])
    for key in ("client_secret_file",):
        assert document["oidc"][key].startswith("/etc/mailgw/secrets/")
    for section, key in (("ldap", "reader_password_file"), ("ingest", "password_file")):
        assert document[section][key].startswith("/etc/mailgw/secrets/")
    assert document["database_url_file"].startswith("/etc/mailgw/secrets/")
    assert document["oidc"]["issuer"] == "https://aai.example.org/oidc"  # no trailing slash: the metadata URL adds one
    assert document["operators"] == ["adam", "zed"]
    assert document["oidc"]["scopes"] == ["openid"], "gateway.yaml names none: the sign-in asks for openid only"
    assert document["ingest"]["path"] == "/ingest/v1"
    assert compiled.artifacts["portal/portal.json"].startswith(b'{\n  "_generated": "by \'mailgw build\'')


def test_retention_per_domain_and_direction(make_repo):
    repo = make_repo(
        {
            "domains/tifpa.example.org.yaml": domain_yaml(filters=FILTERS),
            "domains/lnf.example.org.yaml": domain_yaml("lnf.example.org", site="site: LNF\n"),
        },
        gateway=_gateway(defaults="filters:\n  inbound: {quarantine: {enabled: true, retention_days: 40}}\n"),
    )
    document = json.loads(compile_repository(repo).artifacts["portal/portal.json"])
    assert document["domains"] == {
        "lnf.example.org": {"inbound": 40, "outbound": 30},
        "tifpa.example.org": {"inbound": 21, "outbound": 5},
    }
    assert document["default_retention"] == {"inbound": 40, "outbound": 30}


def test_without_a_portal_section_nothing_of_the_portal_is_generated(make_repo):
    compiled = compile_repository(
        make_repo({"domains/tifpa.example.org.yaml": domain_yaml()}, gateway=_gateway(portal=""))
    )
    assert "portal/portal.json" not in compiled.artifacts
    assert b"release" not in compiled.artifacts["postfix/master.cf"]
    assert b"user =" not in compiled.artifacts["rspamd/local.d/metadata_exporter.conf"]


@pytest.mark.needs("rspamadm")
def test_rspamd_reads_the_ingest_password_from_the_node_file(make_repo, tmp_path, rspamadm_hs_cache):
    include = tmp_path / "quarantine-ingest.ucl"
    gateway = _gateway(extra=f"  ingest_rspamd_include: {include}\n")
    held = "filters:\n  inbound: {spam: {quarantine: 10, reject: false}, quarantine: {enabled: true}}\n"
    compiled = compile_repository(
        make_repo({"domains/tifpa.example.org.yaml": domain_yaml(filters=held)}, gateway=gateway)
    )
    out = tmp_path / "out"
    for rel, data in compiled.artifacts.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    tree = rspamd_env.config_tree(out, tmp_path / "rspamd", hs_cache=rspamadm_hs_cache)
    include.write_text('password = "from-the-node";\n')
    checked = rspamd_env.configtest(tree)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    dumped = subprocess.run(
        [
            program("rspamadm"),
            *tree.variables(),
            "configdump",
            "-c",
            str(tree.conf / "rspamd.conf"),
            "metadata_exporter",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    rule = dumped.stdout.split("MAILGW_QUARANTINE {", 1)[1].split("}", 1)[0]
    assert 'user = "rspamd";' in rule and 'password = "from-the-node";' in rule
    assert 'url = "https://q.example.org:8443/ingest/v1";' in rule
    # Without the file (a node not set up yet) Rspamd still starts: the portal refuses, the mail is deferred.
    include.unlink()
    assert rspamd_env.configtest(tree).returncode == 0


@pytest.mark.needs("postconf")
def test_the_release_service_skips_the_milter_and_takes_only_the_portal_hosts(make_repo, tmp_path):
    compiled = compile_repository(
        make_repo(
            {"domains/tifpa.example.org.yaml": domain_yaml()},
            gateway=_gateway(extra="  release_service: '[::1]:10099'\n  release_clients: [127.0.0.1, '::1']\n"),
        )
    )
    for name in ("main.cf", "master.cf"):
        (tmp_path / name).write_bytes(compiled.artifacts[f"postfix/{name}"])
    done = subprocess.run([program("postconf"), "-c", str(tmp_path), "-P"], capture_output=True, text=True, timeout=60)
    assert done.stderr == ""
    overrides = sorted(line for line in done.stdout.splitlines() if line.startswith("[::1]:10099/inet/"))
    assert overrides == [
        "[::1]:10099/inet/mynetworks = 127.0.0.1/32,[::1]/128",
        "[::1]:10099/inet/smtpd_client_restrictions = permit_mynetworks,reject",
        "[::1]:10099/inet/smtpd_milters =",
        "[::1]:10099/inet/smtpd_relay_restrictions = permit_mynetworks,reject",
        "[::1]:10099/inet/syslog_name = postfix/release",
    ]


def _gateway(portal: str = PORTAL, defaults: str = "", extra: str = "") -> str:
    return (
        "mx_hosts: [mx1.gw.example.org]\nldap: {base_dn: 'ou=mailgw,dc=example,dc=org'}\n"
        + QUARANTINE
        + defaults
        + portal
        + (extra if portal else "")
    )


def test_the_portal_and_the_compiler_never_import_each_other():
    import ast

    def imported(package: str) -> set[str]:
        found = set()
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
        return found

    assert "compiler" not in imported("portal")
    assert "portal" not in imported("compiler")


def test_the_portal_command_says_what_is_missing_without_a_traceback(tmp_path):
    import sys

    missing = subprocess.run(
        [sys.executable, "-m", "portal", "--config", str(tmp_path / "portal.json"), "purge"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr == f"mailgw-portal: cannot read the portal configuration {tmp_path / 'portal.json'}: " \
        "No such file or directory\n"  # fmt: skip
    document = json.loads((REPO / "out" / "portal" / "portal.json").read_text())
    document["database_url_file"] = str(tmp_path / "database.url")
    (tmp_path / "database.url").write_text("postgresql+psycopg://nobody@/none?host=/nonexistent\n")
    (tmp_path / "portal.json").write_text(json.dumps(document))
    down = subprocess.run(
        [sys.executable, "-m", "portal", "--config", str(tmp_path / "portal.json"), "purge"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert down.returncode == 1 and down.stderr.startswith("mailgw-portal purge: ") and "Traceback" not in down.stderr


def test_a_portal_json_from_before_oidc_scopes_still_loads_and_asks_for_openid(tmp_path):
    """A revision put back may carry a portal.json without the scopes: the portal of today still starts on it."""
    from portal import config

    document = json.loads((REPO / "out" / "portal" / "portal.json").read_text())
    del document["oidc"]["scopes"]
    (tmp_path / "portal.json").write_text(json.dumps(document))
    assert config.load(tmp_path / "portal.json").oidc.scopes == ("openid",)
