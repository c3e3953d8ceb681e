"""The fast path reads the common shapes exactly as libyaml and the model do, and never accepts what they refuse.

Two generators, both written from docs/declarations.md and the fast path's
documented shapes, never from the compiler's grammars:

- common-shape files that are valid by construction: the fast path must read
  every one of them, and give what the slow path gives;
- the same files with one line changed into a deviation whose outcome is
  written by hand below: refused (the slow path has findings, the fast path
  must decline) or still valid (the slow path accepts; the fast path reads
  it the same, or declines and leaves it to the slow path).

Every example reaches the assertions (tests/conftest.py counts them).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import fastpath
from compiler.declarations import addresses_of
from compiler.findings import FindingsError
from compiler.load import Document, load_yaml
from compiler.model import DomainDeclaration, parse
from tests.conftest import REPO, example, reached

HEADER = """\
# yaml-language-server: $schema=../schema/domain.schema.json
domain: tifpa.example.org
site: TIFPA
admins: ["@example/tifpa-mail"]
delivery:
  nexthop: smtp:[smtp.tifpa.example.org]:25
"""

# docs/declarations.md. Keys are always text, so any dot-atom of a-z 0-9 _ + - is a key (any case).
KEY = st.lists(st.from_regex(r"[A-Za-z0-9_+-]{1,8}", fullmatch=True), min_size=1, max_size=3).map(".".join)
# Values follow YAML 1.1: a plain uid is lower-case letters, digits, '.', '_', '-' and must read as text.
# The words of that alphabet YAML reads as something else are refused (REFUSED_UIDS); these plain ones
# start with a letter, so no number or date; the few YAML words among them are left out by hand.
YAML_WORDS = {"yes", "no", "on", "off", "true", "false", "null"}
UID = st.from_regex(r"[a-z][a-z0-9._-]{0,10}", fullmatch=True).filter(lambda uid: uid not in YAML_WORDS)
TARGET_DOMAINS = ["example.net", "EXAMPLE.net", "città.example.org", "xn--citt-3na.example.org", "tifpa.example.org"]
TARGET = st.builds(lambda local, domain: f"{local}@{domain}", KEY, st.sampled_from(TARGET_DOMAINS))
INDENT = st.sampled_from(["  ", "  ", "  ", "    ", " "])
COMMENT = st.sampled_from(["", "", "", " # note", "  # a longer note: with words"])
# A person's name (docs/site-admins.md): words of letters with their accents, apostrophes, '-'; a given name and a
# surname, or 'Surname, Given'.
WORD = st.sampled_from(
    ["Mario", "Rossi", "Maria", "Chiara", "De", "Luca", "D'Esposito", "Jean-Luc", "Nicolò", "Müller"]
)
NAME = st.one_of(
    st.lists(WORD, min_size=2, max_size=4).map(" ".join),
    st.builds(lambda surname, given: f"{surname}, {given}", WORD, WORD),
)


@st.composite
def recipient(draw, key: str) -> str:
    """One line of a common shape (README: the fast path), without its indentation."""
    form = draw(st.sampled_from(["person", "person", "person", "alias", "explicit person", "role", "list", "named"]))
    gap = draw(st.sampled_from([" ", " ", "  "]))
    if form == "person":
        value = draw(UID)
    elif form in ("alias", "explicit person"):
        value = f"{{kind: {'alias' if form == 'alias' else 'person'}, uid: {draw(UID)}}}"
    elif form == "named":
        value = f'{{uid: {draw(UID)}, name: "{draw(NAME)}"}}'
    else:
        owners = draw(st.lists(UID, min_size=1, max_size=3))
        value = f"{{kind: {form}, owners: [{', '.join(owners)}]}}"
    return f"{key}:{gap}{value}{draw(COMMENT)}"


@st.composite
def alias(draw, key: str) -> str:
    targets = draw(st.lists(TARGET, min_size=1, max_size=3))
    single = len(targets) == 1 and draw(st.booleans())
    return f"{key}: {targets[0] if single else '[' + ', '.join(targets) + ']'}{draw(COMMENT)}"


@st.composite
def common_file(draw) -> tuple[list[str], list[str]]:
    """(recipient lines, external alias lines), indented, each key once (case-insensitively)."""
    keys = draw(st.lists(KEY, min_size=1, max_size=8, unique_by=str.lower))
    split = draw(st.integers(1, len(keys)))
    people, forwards = draw(INDENT), draw(INDENT)
    recipients = [people + draw(recipient(key)) for key in keys[:split]]
    aliases = [forwards + draw(alias(key)) for key in keys[split:]]
    if draw(st.booleans()):  # a comment line and a blank line inside the section
        recipients.insert(draw(st.integers(0, len(recipients))), "  # people of the lab")
        recipients.append("")
    return recipients, aliases


def render(recipients: list[str], aliases: list[str], *, check_last: bool) -> str:
    text = HEADER + "recipients:\n" + "\n".join(recipients) + "\n"
    if aliases:
        text += "external_aliases:\n" + "\n".join(aliases) + "\n"
    return text + ("recipient_check: list\n" if check_last else "")


def _slow(text: str):
    doc = Document("domains/tifpa.example.org.yaml", text.encode(), text, None)
    try:
        load_yaml(doc)
    except FindingsError as err:
        return None, err.findings
    return parse(doc, DomainDeclaration)


def _fast(text: str):
    return fastpath.read_domain(Document("domains/tifpa.example.org.yaml", text.encode(), text, None))


def _same(fast, decl) -> None:
    assert sorted(fast.addresses) == sorted(addresses_of(decl))
    assert fast.decl.model_dump(exclude={"recipients", "external_aliases"}) == decl.model_dump(
        exclude={"recipients", "external_aliases"}
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(common_file(), st.booleans())
def test_the_fast_path_reads_every_common_shape_as_the_model_does(lines, check_last):
    example("fast path: common shapes read")
    text = render(*lines, check_last=check_last)
    decl, findings = _slow(text)
    fast = _fast(text)
    reached("fast path: common shapes read", "with external aliases" if lines[1] else "recipients only")
    assert findings == [], f"the generator wrote an invalid file: {findings}"
    assert fast is not None, "the fast path declined a file of its common shapes"
    _same(fast, decl)


# --- one line changed: the outcome of each change, written by hand ------------------------------

# A uid YAML reads as a number, a boolean, null or a date, or that breaks the uid grammar: refused.
REFUSED_UIDS = [
    "no", "on", "off", "yes", "true", "false", "null", "Null", "NO", "~", "12", "012", "0x1f", "1_000", "1.5",
    "1.0e+3", "0b101", "2001-12-14", "1:20", ".inf", "-1", "+1", "Mrossi", "m.Rossi", "a+b", ".a", "_x", "-x",
    "a#b", "a b", "x" * 65,
]  # fmt: skip
# Words of resolver-looking first letters or digits that YAML reads as text, and valid uids.
VALID_UIDS = [
    "y",
    "n",
    "1e3",
    "nan",
    "0o7",
    "a..b",
    "a.",
    "nneri",
    "onorato",
    "tbianchi",
    "yolanda",
    "fbruni",
    "m.rossi",
]
# Keys are text whatever they look like; these break the local-part grammar: refused.
# Names the grammar refuses (no surname, a digit, spaces at an end or doubled, two commas, a control, a quote's
# escape), and valid ones.
REFUSED_NAMES = [
    "Mario",
    "Mario Rossi 2",
    " Mario Rossi",
    "Mario  Rossi",
    "Rossi, Mario, Jr",
    "Mario Rossi!",
    "Ma\\x01rio",
]
VALID_NAMES = [
    "Maria Chiara De Luca",
    "Carlo D'Esposito",
    "Rossi Bianchi, Anna",
    "Jean-Luc Picard",
    "Zoe\\u0308 Martin",
]
REFUSED_KEYS = ["a..b", ".a", "a.", "a#b", "a b", "x" * 65, "a@b", "a,b", "~", "1:20", "a\\b", "é"]
VALID_KEYS = ["no", "on", "12", "0x1f", "true", "null", "1_000", "2001-12-14", "+1", "-1", "M.Rossi", "a+b", "_x", "-"]

# (what the line becomes, given the line's key) -> refused or valid.
CHANGES = {
    "refused uid": (lambda key, word: f"{key}: {word}", REFUSED_UIDS, "refused"),
    "refused alias uid": (lambda key, word: f"{key}: {{kind: alias, uid: {word}}}", REFUSED_UIDS, "refused"),
    "refused owner": (lambda key, word: f"{key}: {{kind: list, owners: [mrossi, {word}]}}", REFUSED_UIDS, "refused"),
    "valid uid": (lambda key, word: f"{key}: {word}", VALID_UIDS, "valid"),
    "valid owner": (lambda key, word: f"{key}: {{kind: role, owners: [{word}]}}", VALID_UIDS, "valid"),
    "refused key": (lambda key, word: f"{word}: mrossi", REFUSED_KEYS, "refused"),
    "valid key": (lambda key, word: f"{word}: mrossi", VALID_KEYS, "valid"),
    "quoted uid": (lambda key, word: f'{key}: "{word}"', ["mrossi", "m.rossi"], "valid"),
    "reordered mapping": (lambda key, word: f"{key}: {{uid: {word}, kind: alias}}", ["mrossi"], "valid"),
    "refused name": (lambda key, word: f'{key}: {{uid: mrossi, name: "{word}"}}', REFUSED_NAMES, "refused"),
    "valid name": (lambda key, word: f'{key}: {{uid: mrossi, name: "{word}"}}', VALID_NAMES, "valid"),
    "name first": (lambda key, word: f'{key}: {{name: "{word}", uid: mrossi}}', ["Mario Rossi"], "valid"),
    "alias": (lambda key, word: f"{key}: *{word}", ["mrossi", "a"], "refused"),
    "unknown tag": (lambda key, word: f"{key}: !{word} mrossi", ["foo", "python/name:os.system"], "refused"),
    # The loader reads a standard tag and an anchor nothing refers to as the plain value (the fast path declines).
    "standard tag or lone anchor": (lambda key, word: f"{key}: {word} mrossi", ["!!str", "&a"], "valid"),
    "no value": (lambda key, word: f"{key}:{word}", ["", " # nothing"], "refused"),
    "glued comment": (lambda key, word: f"{key}: mrossi{word}", ["#glued"], "refused"),
    "unknown kind": (lambda key, word: f"{key}: {{kind: {word}, uid: mrossi}}", ["robot", "Alias"], "refused"),
    "no owners": (lambda key, word: f"{key}: {{kind: list, owners: {word}}}", ["[]", "mrossi"], "refused"),
    "tab": (lambda key, word: f"\t{key}: {word}", ["mrossi"], "refused"),
    "duplicate key": (lambda key, word: f"{key}: {word}", ["mrossi"], "duplicate"),
}


@st.composite
def changed_file(draw) -> tuple[str, str, str]:
    """(the file, the change made, 'refused' or 'valid')."""
    recipients, aliases = draw(common_file())
    name = draw(st.sampled_from(sorted(CHANGES)))
    line_of, words, outcome = CHANGES[name]
    word = draw(st.sampled_from(words))
    # 'zz-changed.line' is longer than any generated key: a fresh one.
    first = next(line for line in recipients if line.strip() and not line.strip().startswith("#"))
    indent = first[: len(first) - len(first.lstrip(" "))]
    if outcome == "duplicate":
        recipients.append(first)  # the same key twice in one mapping
        outcome = "refused"
    else:
        line = line_of("zz-changed.line", word)
        recipients.insert(draw(st.integers(0, len(recipients))), line if line.startswith("\t") else indent + line)
    return render(recipients, aliases, check_last=draw(st.booleans())), f"{name}: {word!r}", outcome


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changed_file())
def test_the_fast_path_never_accepts_what_the_model_refuses(case):
    example("fast path: one line changed")
    text, change, outcome = case
    decl, findings = _slow(text)
    fast = _fast(text)
    reached("fast path: one line changed", f"{outcome}, the fast path {'declined' if fast is None else 'read it'}")
    if outcome == "refused":
        assert findings, f"{change}: the model accepted it"
        assert fast is None, f"{change}: the fast path accepted what the model refuses: {findings}"
    else:
        assert findings == [], f"{change}: {findings}"
        if fast is not None:  # declining is always allowed: the slow path reads it
            _same(fast, decl)


def test_the_fast_path_reads_the_bundled_fleet_and_a_large_generated_domain():
    """The bundled fleet and a generated large domain take the fast path (it does not just decline)."""
    for path in sorted((REPO / "domains").glob("*.yaml")):
        text = path.read_text()
        assert _fast(text) is not None, path.name
    import random

    from bench.generate import domain_file as generated

    _, text = generated(3, 2000, random.Random(1))
    fast = _fast(text)
    assert fast is not None and len(fast.addresses) == 2000


def test_the_fast_path_declines_what_only_the_slow_path_can_explain():
    for text in [
        HEADER + "recipients:\n  no: 12\n",  # a number where a uid belongs
        HEADER + "recipients:\n  a: mrossi\n  a: lbianchi\n",  # a duplicate key
        HEADER + "recipients:\n  a: &u mrossi\n  b: *u\n",  # an alias
        HEADER + "recipients:\n\ta: mrossi\n",  # a tab
        HEADER + "recipients:\n  a: 'mrossi'\n",  # a quoted value
        HEADER + "recipients:\n  a: mrossi\n    b: lbianchi\n",  # another indentation
        HEADER + "recipients:\n",  # null
        HEADER.replace("site: TIFPA", "site: T I") + "recipients:\n  a: mrossi\n",  # a bad header
    ]:
        assert _fast(text) is None, text
