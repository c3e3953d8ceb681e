"""The fast path answers only when it agrees with libyaml and the model, exactly."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from compiler import fastpath
from compiler.declarations import addresses_of
from compiler.findings import FindingsError
from compiler.load import Document, load_yaml
from compiler.model import DomainDeclaration, parse
from tests.conftest import REPO

HEADER = """\
# yaml-language-server: $schema=../schema/domain.schema.json
domain: tifpa.example.org
site: TIFPA
admins: ["@example/tifpa-mail"]
delivery:
  nexthop: smtp:[smtp.tifpa.example.org]:25
"""

# Words chosen where YAML 1.1, the grammars and the fast path could disagree.
TRICKY = [
    "no",
    "on",
    "off",
    "yes",
    "y",
    "n",
    "true",
    "null",
    "~",
    "12",
    "012",
    "0x1f",
    "1_000",
    "1e3",
    "1.5",
    "2001-12-14",
    "1:20",
    ".inf",
    "-1",
    "+1",
    "nneri",
    "onorato",
    "tbianchi",
    "yolanda",
    "mrossi",
    "m.rossi",
    "M.Rossi",
    "a+b",
    "a..b",
    ".a",
    "a.",
    "x" * 65,
    "a#b",
    "a b",
    "<<",
    "-",
    "_x",
    "Mrossi",
]
plain = st.from_regex(r"[a-z][a-z0-9._-]{0,10}[a-z0-9]", fullmatch=True)
# Mostly plain words, so that most files are accepted and compared; a quarter tricky ones.
word = st.one_of(plain, plain, plain, st.sampled_from(TRICKY), st.from_regex(r"[a-zA-Z0-9._+-]{1,12}", fullmatch=True))
space = st.sampled_from([" ", " ", " ", "  ", ""])
comment = st.sampled_from(["", "", "", "", " # note", "  #x", "#glued"])


@st.composite
def recipient_line(draw) -> str:
    key, uid, pad = draw(word), draw(word), draw(space)
    form = draw(st.sampled_from([0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 4, 5, 6]))
    if form == 0:
        value = uid
    elif form == 1:
        value = f"{{kind: {draw(st.sampled_from(['alias', 'person', 'robot']))},{pad}uid: {uid}}}"
    elif form == 2:
        owners = ", ".join(draw(st.lists(word, min_size=0, max_size=3)))
        value = f"{{kind: {draw(st.sampled_from(['role', 'list']))}, owners: [{owners}]}}"
    elif form == 3:
        value = f"{{uid: {uid}, kind: alias}}"
    elif form == 4:
        value = f'"{uid}"'
    elif form == 5:
        value = f"&a {uid}"
    else:
        value = ""
    indent = draw(st.sampled_from(["  "] * 12 + ["   ", "\t"]))
    colon = draw(st.sampled_from([" "] * 6 + ["  "]))
    return f"{indent}{key}:{colon}{value}{draw(comment)}"


@st.composite
def alias_line(draw) -> str:
    key = draw(word)
    targets = draw(
        st.lists(
            st.one_of(
                st.builds(
                    lambda a, d: f"{a}@{d}",
                    word,
                    st.sampled_from(
                        [
                            "example.net",
                            "EXAMPLE.net",
                            "città.example.org",
                            "xn--citt-3na.example.org",
                            "bad_domain.org",
                            "tifpa.example.org",
                            "x",
                            "1.2",
                        ]
                    ),
                ),
                st.builds(lambda a: f"{a}@example.net", plain),
                st.builds(lambda a: f"{a}@example.net", plain),
                word,
            ),
            min_size=1,
            max_size=3,
        )
    )
    value = targets[0] if len(targets) == 1 and draw(st.booleans()) else f"[{', '.join(targets)}]"
    return f"  {key}: {value}{draw(comment)}"


@st.composite
def domain_file(draw) -> str:
    recipients = draw(st.lists(recipient_line(), min_size=1, max_size=5))
    aliases = draw(st.lists(alias_line(), min_size=0, max_size=3))
    text = HEADER + "recipients:\n" + "\n".join(recipients) + "\n"
    if draw(st.booleans()):
        text += "  # a comment inside the section\n\n"
    if aliases:
        text += "external_aliases:\n" + "\n".join(aliases) + "\n"
    if draw(st.booleans()):
        text += "recipient_check: list\n"
    return text


def _slow(text: str):
    doc = Document("domains/tifpa.example.org.yaml", text.encode(), text, None)
    try:
        load_yaml(doc)
    except FindingsError as err:
        return None, err.findings
    decl, findings = parse(doc, DomainDeclaration)
    return decl, findings


def _fast(text: str):
    return fastpath.read_domain(Document("domains/tifpa.example.org.yaml", text.encode(), text, None))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(domain_file())
@example(HEADER + "recipients:\n  no: 12\n")
@example(HEADER + "recipients:\n  mario: mrossi\n  mario: lbianchi\n")
@example(HEADER + "recipients:\n  Mario: mrossi\n  mario: lbianchi\n")
@example(HEADER + "recipients:\n  staff: {kind: list, owners: [no, mrossi]}\n")
def test_fast_path_agrees_with_libyaml_and_the_model(text):
    fast = _fast(text)
    if fast is None:
        return
    decl, findings = _slow(text)
    assert findings == [], f"the fast path accepted what the model refuses: {findings}"
    assert sorted(fast.addresses) == sorted(addresses_of(decl))
    assert fast.decl.model_dump(exclude={"recipients", "external_aliases"}) == decl.model_dump(
        exclude={"recipients", "external_aliases"}
    )


def test_fast_path_reads_the_common_shapes():
    """The bundled fleet and a generated large domain take the fast path (it does not just decline)."""
    for path in sorted((REPO / "domains").glob("*.yaml")):
        text = path.read_text()
        assert _fast(text) is not None, path.name
    import random

    from bench.generate import domain_file as generated

    _, text = generated(3, 2000, random.Random(1))
    fast = _fast(text)
    assert fast is not None and len(fast.addresses) == 2000


def test_fast_path_declines_what_only_the_slow_path_can_explain():
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
