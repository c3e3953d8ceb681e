"""DKIM key pairs for `mailgw dkim`, and the selector it adds to a domain's declaration.

The private key is written in the format Rspamd's dkim_signing reads (as
`rspamadm dkim_keygen` writes it): PKCS#8 PEM for RSA, base64 of the 32-byte
seed and the 32-byte public key for Ed25519. The public half is what the
record publishes (p=): base64 of the DER SubjectPublicKeyInfo for RSA
(RFC 6376 3.6.1), of the raw 32 bytes for Ed25519 (RFC 8463).

The declaration is edited as text, so that its comments and layout stay as
the site wrote them: the new selector is appended to `dkim.selectors` (a
block sequence) with the indentation its items already have, or a `dkim:`
block is appended at the end of the file. The caller checks that the edited
file declares exactly what it did plus the new key.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

REFERENCES = ("RFC 6376 3.6.1", "RFC 8463", "RFC 8301 (RSA key sizes)")

RSA_BITS = 2048


@dataclass(frozen=True)
class KeyPair:
    algorithm: str  # rsa | ed25519
    private_key: bytes  # the file Rspamd reads
    public_key: str  # the record's p=


def generate(algorithm: str, bits: int = RSA_BITS) -> KeyPair:
    if algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
        seed = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return KeyPair(algorithm, base64.b64encode(seed + public) + b"\n", base64.b64encode(public).decode("ascii"))
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(algorithm, pem, base64.b64encode(spki).decode("ascii"))


class CannotEdit(Exception):
    """The declaration's shape is not one this edit knows how to extend (a flow-style dkim block, say)."""


def add_selector(text: str, name: str, algorithm: str, public_key: str, *, signing: bool) -> str:
    """`text` (a domain file) with one more DKIM selector; everything else stays byte for byte."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, MappingNode) or root.flow_style:
        raise CannotEdit("the file's top level is not a block mapping")
    fields = ["name: " + name, "algorithm: " + algorithm, f'public_key: "{public_key}"']
    fields.append("signing: " + ("true" if signing else "false"))
    dkim = _value(root, "dkim")
    if dkim is None:
        body = text if text.endswith("\n") or not text else text + "\n"
        return body + "dkim:\n  selectors:\n" + _item(fields, 4, 6)
    if not isinstance(dkim, MappingNode) or dkim.flow_style:
        raise CannotEdit("'dkim' is not a block mapping")
    selectors = _value(dkim, "selectors")
    if not isinstance(selectors, SequenceNode) or selectors.flow_style or not selectors.value:
        raise CannotEdit("'dkim.selectors' is not a block list")
    dash = selectors.start_mark.column
    first = selectors.value[0]
    content = first.start_mark.column if first.start_mark.line == selectors.start_mark.line else dash + 2
    end = max(node.end_mark.index for node in _scalars(selectors.value[-1]))
    line_end = text.find("\n", end)
    at = len(text) if line_end < 0 else line_end + 1
    before = text[:at] if at < len(text) or text.endswith("\n") else text + "\n"
    return before + _item(fields, dash, content) + text[at:]


def _item(fields: list[str], dash: int, content: int) -> str:
    lines = [" " * dash + "- " + " " * (content - dash - 2) + fields[0]]
    lines += [" " * content + field for field in fields[1:]]
    return "\n".join(lines) + "\n"


def _value(mapping: MappingNode, key: str) -> Node | None:
    return next((v for k, v in mapping.value if isinstance(k, ScalarNode) and k.value == key), None)


def _scalars(node: Node) -> list[ScalarNode]:
    if isinstance(node, ScalarNode):
        return [node]
    if isinstance(node, SequenceNode):
        return [s for child in node.value for s in _scalars(child)]
    if isinstance(node, MappingNode):
        return [s for k, v in node.value for s in _scalars(k) + _scalars(v)]
    return []
