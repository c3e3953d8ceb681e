"""Generate a synthetic fleet: N addresses over 60 domains, seeded and deterministic.

Shapes follow a real institute: about 4 addresses per person (name.surname,
initial.surname, a short alias, the bare uid), 5% external aliases, 2% mailing
lists with owners, a few role addresses, and a long tail of domain sizes
(a Zipf-like split: a couple of big sites, many small ones).

    python bench/generate.py --addresses 100000 --out bench/fleet-100k
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

DOMAINS = 60
SITES = 20
GATEWAY = """\
# yaml-language-server: $schema=../../schema/gateway.schema.json
mx_hosts: [mx1.gw.example.org, mx2.gw.example.org]
ldap:
  base_dn: ou=mailgw,dc=example,dc=org
"""
FIRST = [
    "mario",
    "laura",
    "giulia",
    "paolo",
    "sara",
    "luca",
    "anna",
    "marco",
    "elena",
    "carlo",
    "chiara",
    "andrea",
    "francesca",
    "matteo",
    "valentina",
    "davide",
    "silvia",
    "stefano",
    "alessia",
    "giorgio",
]
LAST = [
    "rossi",
    "bianchi",
    "neri",
    "conti",
    "romano",
    "gallo",
    "ricci",
    "marino",
    "greco",
    "bruno",
    "esposito",
    "ferri",
    "colombo",
    "rizzo",
    "moretti",
    "barbieri",
    "fontana",
    "santoro",
    "mariani",
    "rinaldi",
]


def domain_sizes(total: int, rng: random.Random) -> list[int]:
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(DOMAINS)]
    scale = total / sum(weights)
    sizes = [max(5, int(w * scale)) for w in weights]
    sizes[0] += total - sum(sizes)  # the largest domain takes the rounding
    rng.shuffle(sizes)
    return sizes


def domain_file(index: int, size: int, rng: random.Random) -> tuple[str, str]:
    name = f"site{index % SITES:02d}-d{index:02d}.example.org"
    site = f"SITE{index % SITES:02d}"
    lines = [
        "# yaml-language-server: $schema=../../../schema/domain.schema.json",
        f"domain: {name}",
        f"site: {site}",
        f'admins: ["@example/site{index % SITES:02d}-mail"]',
        "delivery:",
        f"  nexthop: smtp:[relay.{name}]:25",
        "recipients:",
    ]
    externals = max(1, size * 5 // 100)
    lists = max(1, size * 2 // 100)
    roles = max(1, size // 100)
    personal = size - externals - lists - roles
    uids: list[str] = []
    person = 0
    while personal > 0:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        uid = f"{first[0]}{last}{index:02d}{person}"
        uids.append(uid)
        addresses = [f"{first}.{last}.{person}", f"{first[0]}.{last}.{person}", f"{last}{person}", uid]
        for local in addresses[: min(4, personal)]:
            kind = "" if local == addresses[0] else "alias"
            lines.append(f"  {local}: {uid}" if not kind else f"  {local}: {{kind: alias, uid: {uid}}}")
        personal -= min(4, personal)
        person += 1
    for n in range(lists):
        owners = ", ".join(rng.sample(uids, k=min(2, len(uids))))
        lines.append(f"  list-{n}: {{kind: list, owners: [{owners}]}}")
    for n in range(roles):
        lines.append(f"  role-{n}: {{kind: role, owners: [{rng.choice(uids)}]}}")
    lines.append("external_aliases:")
    for n in range(externals):
        lines.append(f"  ext.{n}: [{rng.choice(FIRST)}.{n}@partner{n % 7}.example.net]")
    return name, "\n".join(lines) + "\n"


def generate(addresses: int, out: Path, seed: int = 2018) -> None:
    rng = random.Random(seed)
    if out.exists():
        shutil.rmtree(out)
    (out / "domains").mkdir(parents=True)
    (out / "gateway.yaml").write_text(GATEWAY)
    for index, size in enumerate(domain_sizes(addresses, rng)):
        name, text = domain_file(index, size, rng)
        (out / "domains" / f"{name}.yaml").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--addresses", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=2018)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    generate(args.addresses, args.out, args.seed)


if __name__ == "__main__":
    main()
