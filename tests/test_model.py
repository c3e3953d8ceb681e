"""What a declaration means once validated: shorthands, normal forms, defaults."""

from __future__ import annotations

from compiler.fleet import build_fleet
from compiler.pipeline import load_declarations
from tests.conftest import domain_yaml


def _fleet(make_repo, files):
    return build_fleet(load_declarations(make_repo(files)))


def test_idn_domain_is_stored_as_a_label(make_repo):
    fleet = _fleet(make_repo, {"domains/città.example.org.yaml": domain_yaml("Città.Example.org")})
    assert [d.name for d in fleet.domains] == ["xn--citt-3na.example.org"]
    assert fleet.domains[0].addresses[0].address == "info@xn--citt-3na.example.org"


def test_local_parts_and_domains_are_lower_cased(make_repo):
    fleet = _fleet(
        make_repo,
        {
            "domains/tifpa.example.org.yaml": domain_yaml(
                "TIFPA.example.org", recipients="recipients:\n  Mario.Rossi: mrossi\n"
            )
        },
    )
    assert fleet.domains[0].addresses[0].address == "mario.rossi@tifpa.example.org"


def test_recipient_kinds_and_owners(make_repo):
    fleet = _fleet(
        make_repo,
        {
            "domains/tifpa.example.org.yaml": domain_yaml(
                recipients=(
                    "recipients:\n  mario.rossi: mrossi\n  m.rossi: {kind: alias, uid: mrossi}\n"
                    "  laura: lbianchi\n  staff: {kind: list, owners: [mrossi, lbianchi, mrossi]}\n"
                    "external_aliases:\n  g.verdi: Giuseppe.Verdi@Example.NET\n"
                )
            )
        },
    )
    by_address = {a.address.split("@")[0]: a for a in fleet.domains[0].addresses}
    assert by_address["mario.rossi"][1:5] == ("person", "mrossi", (), ())
    assert by_address["m.rossi"][1:5] == ("alias", "mrossi", (), ())
    assert by_address["staff"][1:5] == ("list", None, ("lbianchi", "mrossi"), ())
    # The remote local part keeps its case (only the remote site may fold it); the domain is folded.
    assert by_address["g.verdi"][1:5] == ("external", None, (), ("Giuseppe.Verdi@example.net",))


def test_nexthop_forms_and_default_ports(make_repo):
    fleet = _fleet(
        make_repo,
        {
            "domains/tifpa.example.org.yaml": domain_yaml(delivery="delivery:\n  nexthop: '[Relay.Example.org]'\n"),
            "domains/cnaf.example.org.yaml": domain_yaml(
                "cnaf.example.org",
                delivery=("delivery:\n  nexthop: ['lmtp:[192.0.2.10]', 'lmtp:[mbox.example.org]:2424']\n"),
            ),
        },
    )
    cnaf, tifpa = fleet.domains
    assert [(h.transport, h.host, h.port) for h in tifpa.nexthops] == [("smtp", "relay.example.org", 25)]
    assert [(h.transport, h.host, h.port) for h in cnaf.nexthops] == [
        ("lmtp", "192.0.2.10", 24),
        ("lmtp", "mbox.example.org", 2424),
    ]


def test_defaults_are_primary_and_list(make_repo):
    domain = _fleet(make_repo, {"domains/tifpa.example.org.yaml": domain_yaml()}).domains[0]
    assert (domain.role, domain.recipient_check) == ("primary", "list")


def test_yaml_one_one_booleans_stay_local_parts(make_repo):
    """'no:' and 'on:' are addresses, not booleans (keys are taken literally)."""
    fleet = _fleet(
        make_repo,
        {
            "domains/tifpa.example.org.yaml": domain_yaml(
                recipients="recipients:\n  no: mrossi\n  on: mrossi\n  1e3: mrossi\n"
            )
        },
    )
    assert [a.address for a in fleet.domains[0].addresses] == [
        "1e3@tifpa.example.org",
        "no@tifpa.example.org",
        "on@tifpa.example.org",
    ]
