"""The registry is the one list of families: every registered family has a tiny model, a
split == fused test and a README row, and what is derived from it stays in sync."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from pipelines.models import (
    families_markdown,
    family_for_model_type,
    register,
    resolve_family,
    supported_model_types,
    tiny_cases,
)
from pipelines.models.placeholder import PlaceholderFamily
from pipelines.models.qwen2_vl import QwenVL
from pipelines.models.tiny import TINY_FAMILIES, build_tiny_model, tiny_families

HERE = Path(__file__).parent
README = (HERE.parents[2] / "README.md").read_text()
PARITY_TEST = "test_split_generate_equals_fused_generate"


def _split_test_modules():
    for path in sorted(HERE.glob("test_*_split.py")):
        spec = importlib.util.spec_from_file_location(f"_registry_check_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield path.name, module


def test_every_family_has_a_parity_test():
    covered: dict[str, str] = {}
    for name, module in _split_test_modules():
        assert hasattr(module, PARITY_TEST), f"{name} has no {PARITY_TEST}"
        for model_type in module.MODEL_TYPES:
            assert model_type not in covered, f"{model_type} in {covered.get(model_type)}, {name}"
            covered[model_type] = name
    missing = sorted(set(supported_model_types()) - set(covered))
    assert missing == [], f"registered families without a split == fused test: {missing}"
    assert sorted(covered) == supported_model_types()


@pytest.mark.parametrize("case", tiny_cases(), ids=lambda c: c.id)
def test_every_tiny_model_resolves_to_its_own_family(case, tiny_model_dir):
    path = tiny_model_dir(case.model_type, **case.kwargs)
    assert resolve_family(path) == (family_for_model_type(case.model_type), case.model_type)


def test_tiny_families_are_the_registered_ones():
    assert tiny_families() == supported_model_types() == list(TINY_FAMILIES)
    assert {"qwen2_vl", "qwen2_5_vl", "vision-encoder-decoder"} <= set(TINY_FAMILIES)
    assert "gpt2" not in TINY_FAMILIES
    with pytest.raises(ValueError, match=r"no tiny builder for 'gpt2'; choose one of .*'qwen2_vl'"):
        build_tiny_model("gpt2", "unused")


def test_tiny_families_as_argparse_choices_name_every_family_in_the_help():
    # What ``vidcap tiny-model`` does: the lazy sequence is read only for help and checks.
    parser = argparse.ArgumentParser(prog="tiny-model")
    parser.add_argument(
        "--family", default="qwen2_vl", choices=TINY_FAMILIES, metavar="MODEL_TYPE",
        help="one of: %(choices)s",
    )  # fmt: skip
    text = " ".join(parser.format_help().split())
    assert "one of: " + ", ".join(supported_model_types()) in text
    assert parser.parse_args(["--family", "smolvlm"]).family == "smolvlm"
    with pytest.raises(SystemExit):
        parser.parse_args(["--family", "gpt2"])


def test_readme_family_table_matches_the_registry():
    block = README.split("<!-- families:begin")[1].split("-->", 1)[1].split("<!-- families:end")[0]
    assert block.strip() == families_markdown()
    for model_type in supported_model_types():
        assert f"| `{model_type}`" in block


def test_every_tiny_variant_is_a_case():
    cases = tiny_cases()
    assert len({c.id for c in cases}) == len(cases)
    encoders = [c.kwargs["encoder"] for c in tiny_cases("vision-encoder-decoder")]
    assert encoders == ["clip", "videomae", "timesformer"]
    assert [c.kwargs for c in tiny_cases("qwen2_vl")] == [{}]


def test_a_subclass_must_declare_its_own_model_type_and_docs():
    class Unnamed(QwenVL):
        pass

    with pytest.raises(TypeError, match="Unnamed must define model_type, docs"):
        register(Unnamed)

    class SameName(QwenVL):
        model_type = "qwen2_vl"
        docs = ()

    with pytest.raises(RuntimeError, match="'qwen2_vl' registered twice"):
        register(SameName)
    assert family_for_model_type("qwen2_vl") is QwenVL


def test_a_family_without_a_tiny_builder_is_refused():
    class NoTiny(PlaceholderFamily):
        model_type = "no_tiny"
        docs = ()
        vision_modules = ()

        def encode(self, clips):
            return []

        def request_text(self, request):
            return ""

        def visual_inputs(self, requests):
            return {}

    with pytest.raises(TypeError, match="NoTiny leaves \\['build_tiny'\\] abstract"):
        register(NoTiny)
    assert "no_tiny" not in supported_model_types()
