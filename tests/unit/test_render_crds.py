"""The CRDs in deploy/crds and the chart's crds/ are generated from the models: regenerate in
memory and diff."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import yaml

from wardgate.operator import crds


@pytest.mark.parametrize("directory", crds.CRD_DIRS, ids=lambda d: str(d.parent.name))
def test_checked_in_crds_match_the_models(directory: Path) -> None:
    files = crds.render_files(directory)
    assert sorted(p.name for p in directory.glob("*.yaml")) == sorted(files)
    for name, text in files.items():
        current = (directory / name).read_text(encoding="utf-8")
        diff = "".join(
            difflib.unified_diff(
                current.splitlines(keepends=True), text.splitlines(keepends=True), name, "models"
            )
        )
        assert current == text, f"regenerate with python -m wardgate.operator.crds:\n{diff}"


def test_generator_writes_and_checks_every_directory(tmp_path: Path) -> None:
    first, second = tmp_path / "crds", tmp_path / "chart" / "crds"
    dirs = ["--dir", str(first), "--dir", str(second)]
    assert crds.main(["--check", *dirs]) == 1
    assert crds.main(dirs) == 0
    assert crds.main(["--check", *dirs]) == 0

    (second / "gone.wardgate.io.yaml").write_text(crds.HEADER, encoding="utf-8")
    (first / "routes.wardgate.io.yaml").write_text("edited\n", encoding="utf-8")
    assert crds.main(["--check", *dirs]) == 1
    assert crds.main(dirs) == 0
    assert crds.main(["--check", *dirs]) == 0
    assert not (second / "gone.wardgate.io.yaml").exists()


def test_crds_are_structural() -> None:
    """Every node has a type (or preserves unknown fields / is int-or-string); no $ref, no
    anyOf/oneOf, no defaults (the API server must not write into users' objects)."""

    def walk(node: object, where: str) -> None:
        assert isinstance(node, dict), where
        for banned in ("$ref", "anyOf", "oneOf", "default", "title", "const"):
            assert banned not in node, f"{where}: {banned}"
        for junctor in node.get("allOf", []):  # value checks only: no types, no docs
            text = str(junctor)
            assert "'type': '" not in text, where
            assert "description" not in text, where
        assert (
            "type" in node
            or node.get("x-kubernetes-preserve-unknown-fields")
            or node.get("x-kubernetes-int-or-string")
        ), where
        for key, child in node.get("properties", {}).items():
            walk(child, f"{where}.{key}")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{where}.*")
        if "items" in node:
            walk(node["items"], f"{where}[]")

    for kind in crds.KINDS:
        crd = crds.build_crd(kind)
        version = crd["spec"]["versions"][0]
        walk(version["schema"]["openAPIV3Schema"], kind.kind)
        assert version["subresources"] == {"status": {}}
        assert crd["spec"]["names"]["categories"] == ["wardgate"]
        assert "gtw" not in crd["spec"]["names"]["shortNames"]


def test_every_validator_has_a_translation() -> None:
    """A new validator in the models without a CRD translation stops the generator."""
    from pydantic import BaseModel, TypeAdapter, field_validator

    class Sneaky(BaseModel):
        value: str

        @field_validator("value")
        @classmethod
        def _no_translation(cls, value: str) -> str:
            return value

    with pytest.raises(ValueError, match="no CRD translation"):
        crds.structural_schema(TypeAdapter(Sneaky))


def test_files_are_valid_yaml_with_one_document_each() -> None:
    for text in crds.render_crd_files().values():
        documents = list(yaml.safe_load_all(text))
        assert len(documents) == 1
        assert documents[0]["kind"] == "CustomResourceDefinition"
