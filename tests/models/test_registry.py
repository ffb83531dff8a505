from __future__ import annotations

import sys

import pytest

from cadenza.errors import ConfigurationError, MissingDependency, ModelNotFound
from cadenza.models import Provider, infer_model, providers, register_provider
from cadenza.testing.scripted_model import ScriptedModel


def test_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(ModelNotFound) as caught:
        infer_model("gemini:pro")
    message = str(caught.value)
    for name in ("local:", "bedrock:", "openai:", "anthropic:", "scripted:"):
        assert name in message
    assert isinstance(caught.value, ConfigurationError)
    assert caught.value.exit_code == 2


def test_bare_name_that_is_no_local_model() -> None:
    with pytest.raises(ModelNotFound, match="provider:model"):
        infer_model("gpt-4o")


def test_a_model_passes_through() -> None:
    model = ScriptedModel()
    assert infer_model(model) is model


@pytest.mark.parametrize(
    ("name", "module", "adapter", "extra"),
    [
        ("openai:gpt-4o", "httpx", "cadenza.models._openai", "openai"),
        ("anthropic:claude-3-5-haiku-latest", "httpx", "cadenza.models._anthropic", "anthropic"),
        ("bedrock:amazon.nova-lite-v1:0", "boto3", "cadenza.models._bedrock", "aws"),
        ("local:smollm2", "llama_cpp", "cadenza.models._local", "local"),
    ],
)
def test_missing_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, name: str, module: str, adapter: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # the import now fails
    monkeypatch.delitem(sys.modules, adapter, raising=False)
    with pytest.raises(MissingDependency) as caught:
        infer_model(name)
    assert caught.value.extra == extra
    assert f"pip install 'cadenza[{extra}]'" in str(caught.value)


def test_missing_local_gguf_file() -> None:
    pytest.importorskip("llama_cpp")
    with pytest.raises(ModelNotFound, match=r"\.gguf"):
        infer_model("local:/nowhere/model.gguf")


def test_providers_report_their_extras() -> None:
    listed = {p.name: p for p in providers()}
    assert listed["scripted"].installed
    assert listed["bedrock"].extra == "aws"
    assert "OPENAI_API_KEY" in listed["openai"].env


def test_register_a_provider() -> None:
    register_provider(
        Provider("mine", lambda model, **o: ScriptedModel(name=f"mine-{model}"), "custom")
    )
    assert infer_model("mine:x").name == "scripted:mine-x"


def test_missing_smollm2_package_names_the_local_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    local = pytest.importorskip("cadenza.models._local")
    monkeypatch.setitem(local.KNOWN_LOCAL_MODELS, "smollm2", ("no_such_weights_package", "*.gguf"))
    with pytest.raises(MissingDependency) as caught:
        infer_model("local:smollm2")
    assert caught.value.extra == "local"
