"""mailgw dkim: a key pair, the private half in a new file of mode 0600, the public half in the declaration,
the rest of the file byte for byte as the site wrote it."""

from __future__ import annotations

import base64
import stat

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.conftest import domain_yaml

DOMAIN_FILE = "domains/tifpa.example.org.yaml"
# A declaration with comments, flow and block styles mixed, as sites write them.
WRITTEN = (
    "# TIFPA's mail domain\n"
    + domain_yaml(recipients="recipients:   # people\n  mario.rossi: mrossi   # the director\n")
    + "outbound_relays:\n    - 198.51.100.10\n"
)


def _public(private_pem: bytes) -> str:
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def test_a_new_key_is_appended_with_signing_off_and_the_file_is_otherwise_untouched(make_repo, mailgw, tmp_path):
    root = make_repo({DOMAIN_FILE: WRITTEN})
    key = tmp_path / "tifpa.key"
    result = mailgw(root, "dkim", "tifpa.example.org", "--selector", "gw2025a", "--private-key", str(key))
    assert result.code == 0, result.err
    text = (root / DOMAIN_FILE).read_text()
    assert text.startswith(WRITTEN)
    [selector] = yaml.safe_load(text)["dkim"]["selectors"]
    assert selector == {
        "name": "gw2025a",
        "algorithm": "rsa",
        "public_key": _public(key.read_bytes()),
        "signing": False,
    }
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "tifpa.example.org.gw2025a.key" in result.err and "mailgw dns check tifpa.example.org" in result.err
    assert mailgw(root, "validate").code == 0


def test_a_second_key_joins_the_list_with_its_indentation_and_comments_kept(make_repo, mailgw, tmp_path):
    first = tmp_path / "first.key"
    root = make_repo({DOMAIN_FILE: WRITTEN})
    assert mailgw(root, "dkim", "tifpa.example.org", "--selector", "one", "--private-key", str(first)).code == 0
    # The site re-indents its list (dash at column 2) and adds comments around it.
    text = (root / DOMAIN_FILE).read_text().replace("    - name: one", "  - name: one   # the first key")
    text = text.replace("      ", "    ").replace("signing: false\n", "signing: true\n") + "# the end\n"
    (root / DOMAIN_FILE).write_text(text)
    second = tmp_path / "second.key"
    result = mailgw(
        root, "dkim", "tifpa.example.org", "--selector", "two", "--algorithm", "ed25519", "--private-key", str(second)
    )
    assert result.code == 0, result.err
    after = (root / DOMAIN_FILE).read_text()
    head, tail = text.split("    signing: true\n")
    assert after.startswith(head + "    signing: true\n  - name: two\n    algorithm: ed25519\n")
    assert after.endswith("    signing: false\n" + tail)
    keys = yaml.safe_load(after)["dkim"]["selectors"]
    assert [(k["name"], k["algorithm"], k["signing"]) for k in keys] == [
        ("one", "rsa", True),
        ("two", "ed25519", False),
    ]
    # Rspamd's Ed25519 key file: base64 of the seed and the public key; the record publishes the public key.
    raw = base64.b64decode(second.read_bytes())
    assert len(raw) == 64
    derived = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32]).public_key()
    public = derived.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw[32:] == public and base64.b64encode(public).decode() == keys[1]["public_key"]
    assert mailgw(root, "validate").code == 0


def test_an_existing_private_key_file_is_never_overwritten(make_repo, mailgw, tmp_path):
    root = make_repo({DOMAIN_FILE: WRITTEN})
    key = tmp_path / "kept.key"
    key.write_bytes(b"the operator's old key\n")
    result = mailgw(root, "dkim", "tifpa.example.org", "--selector", "gw2025a", "--private-key", str(key))
    assert result.code == 2
    assert result.err == f"mailgw: dkim: {key} exists; a private key is never overwritten, choose another path\n"
    assert key.read_bytes() == b"the operator's old key\n"
    assert (root / DOMAIN_FILE).read_text() == WRITTEN


@pytest.mark.parametrize(
    "selector, message",
    [
        ("gw 2025", "selector 'gw 2025' contains a space"),
        ("../etc", "selector '../etc' is not one lower-case DNS label"),
        ("GW2025", "selector 'GW2025' is not one lower-case DNS label"),
        ("-gw", "selector '-gw' is not one lower-case DNS label"),
    ],
)
def test_a_bad_selector_is_refused_before_anything_is_written(make_repo, mailgw, tmp_path, selector, message):
    root = make_repo({DOMAIN_FILE: WRITTEN})
    key = tmp_path / "k.key"
    result = mailgw(root, "dkim", "tifpa.example.org", f"--selector={selector}", "--private-key", str(key))
    assert result.code == 2 and result.err.startswith(f"mailgw: dkim: {message}; "), result.err
    assert not key.exists() and (root / DOMAIN_FILE).read_text() == WRITTEN


def test_a_selector_the_domain_already_has_is_refused(make_repo, mailgw, tmp_path):
    root = make_repo({DOMAIN_FILE: WRITTEN})
    assert (
        mailgw(root, "dkim", "tifpa.example.org", "--selector", "one", "--private-key", str(tmp_path / "a")).code == 0
    )
    text = (root / DOMAIN_FILE).read_text()
    result = mailgw(root, "dkim", "tifpa.example.org", "--selector", "one", "--private-key", str(tmp_path / "b"))
    assert (result.code, result.err) == (
        2,
        "mailgw: dkim: tifpa.example.org already has selector 'one' (domains/tifpa.example.org.yaml:13:13); "
        "choose a new one\n",
    )
    assert not (tmp_path / "b").exists() and (root / DOMAIN_FILE).read_text() == text


def test_a_flow_style_dkim_block_is_left_to_the_site(make_repo, mailgw, tmp_path):
    first = tmp_path / "first.key"
    root = make_repo({DOMAIN_FILE: WRITTEN})
    assert mailgw(root, "dkim", "tifpa.example.org", "--selector", "one", "--private-key", str(first)).code == 0
    declared = yaml.safe_load((root / DOMAIN_FILE).read_text())["dkim"]["selectors"][0]
    flow = WRITTEN + f"dkim: {{selectors: [{{name: one, public_key: '{declared['public_key']}'}}]}}\n"
    (root / DOMAIN_FILE).write_text(flow)
    key = tmp_path / "two.key"
    result = mailgw(root, "dkim", "tifpa.example.org", "--selector", "two", "--private-key", str(key))
    assert result.code == 2
    assert result.err == (
        "mailgw: dkim: cannot add the selector to domains/tifpa.example.org.yaml: 'dkim' is not a block mapping; "
        "add it by hand\n"
    )
    assert not key.exists() and (root / DOMAIN_FILE).read_text() == flow


def test_an_unknown_domain_is_a_usage_error(make_repo, mailgw, tmp_path):
    root = make_repo({DOMAIN_FILE: WRITTEN})
    result = mailgw(root, "dkim", "cnaf.example.org", "--selector", "a", "--private-key", str(tmp_path / "k"))
    assert (result.code, result.err) == (2, "mailgw: dkim: no domain cnaf.example.org in domains/\n")
