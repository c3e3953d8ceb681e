"""mailgw schema: draft-07 JSON Schemas that editors use, current, and agreeing with the compiler on shape."""

from __future__ import annotations

import json

import jsonschema
import pytest

from compiler import schema
from compiler.load import load_file
from tests.conftest import REPO, domain_yaml
from tests.error_cases import CASES

DOMAIN_MODELINE = "# yaml-language-server: $schema=../schema/domain.schema.json"
GATEWAY_MODELINE = "# yaml-language-server: $schema=schema/gateway.schema.json"
# Findings about the shape of a document, which a JSON Schema can see too.
SHAPE_CODES = {"unknown-field", "missing-field", "invalid-choice", "wrong-type", "empty-list", "not-a-mapping"}


def validator(name: str) -> jsonschema.Draft7Validator:
    document = json.loads((REPO / "schema" / f"{name}.schema.json").read_text())
    return jsonschema.Draft7Validator(document)


def test_committed_schema_is_current():
    for rel, data in schema.files().items():
        assert (REPO / rel).read_bytes() == data, f"{rel} is stale: run 'mailgw schema' and commit the result"


def test_schema_is_draft_07_that_its_meta_schema_accepts():
    for rel in schema.files():
        document = json.loads((REPO / rel).read_text())
        assert document["$schema"] == "http://json-schema.org/draft-07/schema#"
        jsonschema.Draft7Validator.check_schema(document)
        text = (REPO / rel).read_text()
        assert "$defs" not in text and "discriminator" not in text
        refs = [line.split('"')[3] for line in text.splitlines() if '"$ref"' in line]
        assert refs and all(ref.removeprefix("#/definitions/") in document["definitions"] for ref in refs)


def test_every_declaration_names_its_schema_in_a_modeline():
    for path in sorted((REPO / "domains").glob("*.yaml")):
        assert path.read_text().splitlines()[0] == DOMAIN_MODELINE, path.name
        assert (path.parent / "../schema/domain.schema.json").is_file()
    assert (REPO / "gateway.yaml").read_text().splitlines()[0] == GATEWAY_MODELINE


def test_bundled_declarations_are_valid_against_the_schema():
    domain, gateway = validator("domain"), validator("gateway")
    for path in sorted((REPO / "domains").glob("*.yaml")):
        errors = [e.message for e in domain.iter_errors(load_file(path, path.name).data)]
        assert errors == [], path.name
    assert list(gateway.iter_errors(load_file(REPO / "gateway.yaml", "gateway.yaml").data)) == []


def test_the_shorthands_the_compiler_accepts_are_valid(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(
        domain_yaml(recipients="recipients:\n  mario.rossi: mrossi\n")
        + "external_aliases:\n  g.verdi: giuseppe.verdi@example.net\n"
    )
    assert list(validator("domain").iter_errors(load_file(path, "d.yaml").data)) == []


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.code in SHAPE_CODES and c.gateway is None], ids=lambda c: c.code
)
def test_shape_errors_of_the_compiler_are_schema_errors_too(case, tmp_path):
    [(rel, content)] = case.files.items()
    path = tmp_path / "d.yaml"
    path.write_text(content)
    assert list(validator("domain").iter_errors(load_file(path, rel).data)), case.summary


def test_schema_rejects_a_misspelt_field_and_an_unknown_kind(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(domain_yaml() + "recipent_check: list\n")
    [error] = validator("domain").iter_errors(load_file(path, "d.yaml").data)
    assert "'recipent_check' was unexpected" in error.message
    path.write_text(domain_yaml(recipients="recipients:\n  info: {kind: group, owners: [mrossi]}\n"))
    assert list(validator("domain").iter_errors(load_file(path, "d.yaml").data))


def test_schema_command_writes_and_checks(make_repo, mailgw):
    root = make_repo({})
    stale = mailgw(root, "schema", "--check")
    assert stale.code == 1
    assert stale.err == (
        "schema/domain.schema.json, schema/gateway.schema.json: stale; run 'mailgw schema' and commit the result\n"
    )
    assert mailgw(root, "schema").err == "wrote schema/domain.schema.json, schema/gateway.schema.json\n"
    assert mailgw(root, "schema", "--check").code == 0
    for rel in schema.files():
        assert (root / rel).read_bytes() == (REPO / rel).read_bytes()
    (root / "schema/gateway.schema.json").write_text("{}\n")
    assert (
        mailgw(root, "schema", "--check").err
        == "schema/gateway.schema.json: stale; run 'mailgw schema' and commit the result\n"
    )
