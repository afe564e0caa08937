"""`mlxjan create`: a model from an installed one, under another chat template."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlxjan.cli import main
from mlxjan.errors import InvalidRequestError, ModelNotFoundError
from mlxjan.models.derive import create_variant
from mlxjan.models.fetch import pull
from mlxjan.models.store import ModelStore, new_manifest, staged_size

TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}<think>\n"


def test_a_variant_shares_the_weights_and_has_its_own_template(
        store: ModelStore, gguf_file: Path) -> None:
    base = pull(store, str(gguf_file), model_id="base", progress=False)
    made = create_variant(store, "base", "base-think", TEMPLATE)
    assert made.chat_template == TEMPLATE and made.sha256 == base.sha256
    assert (made.format, made.file, made.size) == (base.format, base.file, base.size)
    got = store.get("base-think")
    assert got is not None and got.chat_template == TEMPLATE
    original, linked = store.weights_path(base), store.weights_path(made)
    assert linked.stat().st_ino == original.stat().st_ino  # hard-linked, not copied
    assert store.get("base") == base  # the base is untouched
    store.remove("base-think")
    assert original.read_bytes()  # removing the variant leaves the base's weights


def test_an_mlx_folder_is_linked_file_by_file(store: ModelStore, tmp_path: Path) -> None:
    with store.staging("folder") as staged:
        model = staged / "model"
        (model / "sub").mkdir(parents=True)
        (model / "config.json").write_text("{}")
        (model / "sub" / "weights.safetensors").write_bytes(b"x" * 10)
        store.install(model, new_manifest(id="folder", format="mlx", source="t", file=".",
                                          sha256="ab" * 32, size=staged_size(model)))
    create_variant(store, "folder", "folder-2", TEMPLATE)
    copy = store.model_dir("folder-2")
    assert (copy / "sub" / "weights.safetensors").read_bytes() == b"x" * 10
    manifest = store.get("folder-2")
    assert manifest is not None and manifest.chat_template == TEMPLATE


def test_bad_variants_are_refused(store: ModelStore, gguf_file: Path) -> None:
    pull(store, str(gguf_file), model_id="base", progress=False)
    with pytest.raises(ModelNotFoundError):
        create_variant(store, "absent", "x", TEMPLATE)
    with pytest.raises(InvalidRequestError):
        create_variant(store, "base", "base", TEMPLATE)
    with pytest.raises(InvalidRequestError):
        create_variant(store, "base", "x", "  ")
    assert store.get("x") is None


def test_the_cli_reads_the_template_file(store: ModelStore, gguf_file: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    pull(store, str(gguf_file), model_id="base", progress=False)
    template = tmp_path / "think.jinja"
    template.write_text(TEMPLATE)
    data = ["--data-dir", str(store.root)]
    assert main(["create", "base-think", "--from", "base", "--chat-template",
                 str(template), *data]) == 0
    assert "base-think: installed" in capsys.readouterr().out
    manifest = store.get("base-think")
    assert manifest is not None and manifest.chat_template == TEMPLATE
    assert main(["create", "y", "--from", "base", "--chat-template",
                 str(tmp_path / "missing.jinja"), *data]) == 1
