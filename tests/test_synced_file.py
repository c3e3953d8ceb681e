"""sources/<domain>.yaml: what mailgw sync writes reads back as exactly the list it was written from.

Values are generated valid by construction, from words where YAML 1.1 and
the grammars could disagree (numbers, booleans, dates, leading '-' or '+');
whichever path the loader takes (the fast path, or libyaml and the model),
it must give back the same addresses, and every address is on the line the
writer says.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.declarations import Address
from compiler.load import document
from compiler.model import DomainDeclaration
from compiler.pipeline import synced_addresses
from compiler.sync import synced

DOMAIN = "tifpa.example.org"
URL = "https://directory.tifpa.example.org/mailgw/addresses.csv"
DECL = DomainDeclaration.model_validate(
    {"domain": DOMAIN, "site": "TIFPA", "admins": ["@example/tifpa-mail"], "delivery": {"nexthop": "[a.b.org]:25"}}
)
# Valid local parts and uids, many of which YAML 1.1 would read as something other than text if written plain.
WORDS = ["no", "on", "yes", "y", "n", "true", "null", "12", "012", "0x1f", "1e3", "1.5", "2001-12-14", "mrossi"]
LOCALS = WORDS + ["-x", "+x", "_x", "a+b", "m.rossi", "x-1", "1_000"]
UIDS = WORDS + ["m.rossi", "a_b", "x-1", "0"]
TARGETS = ["g.verdi@example.net", "_x@example.net", "12@example.net", "-a@example.org", "no@example.com"]


@st.composite
def site_lists(draw) -> list[Address]:
    locals_ = draw(st.lists(st.sampled_from(LOCALS), min_size=1, max_size=12, unique=True))
    entries = []
    for local in locals_:
        kind = draw(st.sampled_from(["person", "alias", "role", "list", "external"]))
        address = f"{local}@{DOMAIN}"
        if kind in ("person", "alias"):
            entries.append(Address(address, kind, draw(st.sampled_from(UIDS)), (), (), local))
        elif kind == "external":
            targets = tuple(sorted(draw(st.sets(st.sampled_from(TARGETS), min_size=1, max_size=3))))
            entries.append(Address(address, kind, None, (), targets, local))
        else:
            owners = tuple(sorted(draw(st.sets(st.sampled_from(UIDS), min_size=1, max_size=3))))
            entries.append(Address(address, kind, None, owners, (), local))
    return entries


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    site_lists(), st.sampled_from([synced.Validators(), synced.Validators('"abc"', "Mon, 30 Nov 2026 06:00:00 GMT")])
)
def test_a_synced_file_reads_back_as_its_list(entries, validators):
    text, lines = synced.render(URL, entries, validators)
    assert synced.is_intact(text)
    header = synced.read_header(text)
    assert header is not None and header.url == URL and header.validators == validators
    found, findings = synced_addresses(document(text.encode(), "sources/tifpa.example.org.yaml"), DECL)
    assert findings == []
    assert sorted(found) == sorted(entries)
    rows = text.split("\n")
    for entry in entries:
        written = rows[lines[entry.address] - 1].strip()
        assert written.startswith((entry.key + ":", f"'{entry.key}':")), (written, entry)


def test_a_hand_edit_breaks_the_digest():
    person = Address(f"mario.rossi@{DOMAIN}", "person", "mrossi", (), (), "mario.rossi")
    text, _ = synced.render(URL, [person], synced.Validators())
    assert synced.is_intact(text)
    assert not synced.is_intact(text.replace("mrossi", "lbianchi"))
    assert not synced.is_intact(text + "  extra: x\n")
    assert not synced.is_intact("# a comment\n" + text)
