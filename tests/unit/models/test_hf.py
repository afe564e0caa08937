"""`mlxjan pull org/repo[@rev][:file.gguf]` against the local Hub stand-in (no network)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants
from safetensors.numpy import save_file

from mlxjan.cli import main
from mlxjan.errors import HubUnreachableError, ModelNotFoundOnHubError, ModelStoreError
from mlxjan.models.hf import HfRef, HubConfig, parse_hf_ref, pull_hf
from mlxjan.models.store import ModelStore, folder_sha256
from mlxjan.settings import Settings
from mlxjan.testing.hub import HubStandIn
from mlxjan.testing.server import free_port, running
from tests.unit.models.ggufs import CHAT_TEMPLATE, write_gguf

MLX_REPO = "mlx-community/Tiny-Qwen2.5-4bit"
GGUF_REPO = "someone/Tiny-GGUF"
GGUF_FILE = "Tiny-Model-Q4_K_M.gguf"
TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
MLX_FILES = ["config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
             "tokenizer_config.json"]


def mlx_folder(root: Path, *, layers: int = 2) -> Path:
    """An MLX-style repo: config, real safetensors weights, tokenizer files, and extras
    (README, an image, a subfolder) that a pull must leave behind."""
    root.mkdir(parents=True)
    config = {"model_type": "qwen2", "max_position_embeddings": 32768, "num_hidden_layers": layers,
              "quantization": {"group_size": 64, "bits": 4}}
    (root / "config.json").write_text(json.dumps(config))
    save_file({"w": np.arange(200_000, dtype=np.float32) * layers}, str(root / "model.safetensors"))
    (root / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {}}))
    (root / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    (root / "special_tokens_map.json").write_text("{}")
    (root / "README.md").write_text("# tiny\n")
    (root / "figure.png").write_bytes(b"\x89PNG")
    (root / "original").mkdir()
    (root / "original" / "config.json").write_text("{}")
    return root


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface-hub writes what it receives in 10 MB chunks; small ones let a cut-off test
    # with small files keep the bytes that arrived before the cut.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture
def hub(tmp_path: Path) -> HubStandIn:
    hub = HubStandIn()
    hub.add_commit(MLX_REPO, mlx_folder(tmp_path / "repos" / "mlx"))
    gguf_dir = tmp_path / "repos" / "gguf"
    gguf_dir.mkdir(parents=True)
    write_gguf(gguf_dir / GGUF_FILE, context_length=4096)
    write_gguf(gguf_dir / "Tiny-Model-Q8_0.gguf")
    hub.add_commit(GGUF_REPO, gguf_dir)
    return hub


@pytest.fixture
def hub_config(hub: HubStandIn) -> Iterator[HubConfig]:
    with running(hub.app()) as url:
        yield HubConfig(url)


def area(store: ModelStore, repo_id: str) -> Path:
    return store.root / "downloads" / "hf" / repo_id.replace("/", "--")


def assert_nothing_installed(store: ModelStore) -> None:
    assert store.list() == []
    assert not store.models_dir.exists() or list(store.models_dir.iterdir()) == []


# --- references ------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "ref"), [
    ("org/repo", HfRef("org/repo")),
    ("mlx-community/Qwen2.5-0.5B-Instruct-4bit@main",
     HfRef("mlx-community/Qwen2.5-0.5B-Instruct-4bit", "main")),
    ("org/repo@v1.0:sub/model-Q4_K_M.gguf", HfRef("org/repo", "v1.0", "sub/model-Q4_K_M.gguf")),
    ("hf://org/repo:m.gguf", HfRef("org/repo", None, "m.gguf")),
    ("org/repo@refs/pr/1", HfRef("org/repo", "refs/pr/1")),
])
def test_parse_hub_references(source: str, ref: HfRef) -> None:
    assert parse_hf_ref(source) == ref


@pytest.mark.parametrize("source", [
    "qwen2.5-coder-0.5b-instruct", "models/tiny.gguf", "/abs/path/m.gguf", "../up/repo",
    "a/b/c", "org/re..po", "org/repo:",
])
def test_other_sources_are_not_hub_references(source: str) -> None:
    assert parse_hf_ref(source) is None


# --- MLX repos -------------------------------------------------------------------------------


def test_pull_mlx_repo_installs_the_folder(store: ModelStore, hub: HubStandIn,
                                           hub_config: HubConfig) -> None:
    manifest = pull_hf(store, HfRef(MLX_REPO), hub_config, progress=False)
    commit = hub.repos[MLX_REPO]["main"].sha
    assert manifest.id == "tiny-qwen2.5-4bit"
    assert (manifest.format, manifest.file) == ("mlx", ".")
    assert manifest.source == f"hf://{MLX_REPO}@{commit}"
    assert (manifest.architecture, manifest.context_length) == ("qwen2", 32768)
    assert manifest.chat_template == TEMPLATE
    folder = store.weights_path(manifest)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*MLX_FILES, "manifest.json"])
    for name in MLX_FILES:  # byte for byte what the Hub holds
        assert (folder / name).read_bytes() == hub.repos[MLX_REPO]["main"].files[name].path \
            .read_bytes()
    assert manifest.sha256 == folder_sha256(folder)
    assert manifest.size == sum((folder / n).stat().st_size for n in MLX_FILES)
    assert store.get(manifest.id) == manifest
    assert not area(store, MLX_REPO).exists()  # the download area is cleaned
    assert list(store.staging_dir.iterdir()) == []


def test_pull_of_the_installed_commit_is_a_no_op(store: ModelStore, hub: HubStandIn,
                                                 hub_config: HubConfig) -> None:
    first = pull_hf(store, HfRef(MLX_REPO), hub_config, progress=False)
    hub.requests.clear()
    assert pull_hf(store, HfRef(MLX_REPO), hub_config, progress=False) == first
    assert [r.method for r in hub.requests] == ["GET"]  # one look-up, no file fetched
    hub.requests.clear()
    pinned = HfRef(MLX_REPO, hub.repos[MLX_REPO]["main"].sha)
    assert pull_hf(store, pinned, hub_config, progress=False) == first
    assert hub.requests == []  # a pinned commit that is installed needs no Hub at all


def test_revision_pinning(store: ModelStore, hub: HubStandIn, hub_config: HubConfig,
                          tmp_path: Path) -> None:
    old = hub.repos[MLX_REPO]["main"].sha
    new = hub.add_commit(MLX_REPO, mlx_folder(tmp_path / "v2", layers=3))
    hub.repos[MLX_REPO]["v1"] = hub.repos[MLX_REPO][old]  # a tag on the first commit
    assert old != new

    pinned = pull_hf(store, HfRef(MLX_REPO, old), hub_config, model_id="pinned", progress=False)
    assert pinned.source == f"hf://{MLX_REPO}@{old}"
    config = json.loads((store.weights_path(pinned) / "config.json").read_text())
    assert config["num_hidden_layers"] == 2
    tagged = pull_hf(store, HfRef(MLX_REPO, "v1"), hub_config, model_id="tagged",
                     progress=False)
    assert tagged.source == pinned.source and tagged.sha256 == pinned.sha256

    latest = pull_hf(store, HfRef(MLX_REPO), hub_config, model_id="pinned", progress=False)
    assert latest.source == f"hf://{MLX_REPO}@{new}"  # main moved on: reinstalled
    config = json.loads((store.weights_path(latest) / "config.json").read_text())
    assert config["num_hidden_layers"] == 3
    assert latest.sha256 != pinned.sha256


def test_gguf_only_repo_pulled_as_mlx_points_at_its_files(store: ModelStore,
                                                          hub_config: HubConfig) -> None:
    with pytest.raises(ModelNotFoundOnHubError, match=f"{GGUF_REPO}:Tiny-Model-Q4_K_M.gguf"):
        pull_hf(store, HfRef(GGUF_REPO), hub_config, progress=False)
    assert_nothing_installed(store)


# --- GGUF files ------------------------------------------------------------------------------


def test_pull_one_gguf_file(store: ModelStore, hub: HubStandIn, hub_config: HubConfig) -> None:
    manifest = pull_hf(store, HfRef(GGUF_REPO, None, GGUF_FILE), hub_config, progress=False)
    hub_file = hub.repos[GGUF_REPO]["main"].files[GGUF_FILE]
    assert manifest.id == "tiny-model-q4_k_m"
    assert (manifest.format, manifest.file) == ("gguf", GGUF_FILE)
    assert manifest.source == f"hf://{GGUF_REPO}@{hub.repos[GGUF_REPO]['main'].sha}/{GGUF_FILE}"
    assert manifest.sha256 == hashlib.sha256(hub_file.path.read_bytes()).hexdigest()
    assert (manifest.architecture, manifest.context_length) == ("llama", 4096)
    assert manifest.chat_template == CHAT_TEMPLATE
    assert store.weights_path(manifest).read_bytes() == hub_file.path.read_bytes()
    assert sorted(p.name for p in store.model_dir(manifest.id).iterdir()) == [
        GGUF_FILE, "manifest.json"]
    # Only that file was fetched, not its Q8 sibling.
    assert {r.path.rsplit("/", 1)[-1] for r in hub.requests if "/resolve/" in r.path} == {
        GGUF_FILE}
    assert not area(store, GGUF_REPO).exists()


def test_corrupt_download_is_refused(store: ModelStore, hub: HubStandIn,
                                     hub_config: HubConfig) -> None:
    hub_file = hub.repos[GGUF_REPO]["main"].files[GGUF_FILE]
    data = bytearray(hub_file.path.read_bytes())
    data[-1] ^= 0xFF  # the Hub serves bytes that do not match the sha256 it announces
    hub_file.path.write_bytes(bytes(data))
    with pytest.raises(ModelStoreError, match="digest"):
        pull_hf(store, HfRef(GGUF_REPO, None, GGUF_FILE), hub_config, progress=False)
    assert_nothing_installed(store)
    assert list(area(store, GGUF_REPO).iterdir()) == []  # and nothing bad kept to resume


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("ref", "message"), [
    (HfRef("nobody/nothing"), "no model repo 'nobody/nothing'"),
    (HfRef(MLX_REPO, "no-such-branch"), "has no revision 'no-such-branch'"),
    (HfRef(GGUF_REPO, None, "Missing-Q2_K.gguf"), "has no file 'Missing-Q2_K.gguf'"),
    (HfRef(GGUF_REPO, None, "README.md"), "only .gguf files"),
])
def test_missing_repo_revision_or_file(store: ModelStore, hub_config: HubConfig, ref: HfRef,
                                       message: str) -> None:
    with pytest.raises(ModelStoreError, match=message) as err:
        pull_hf(store, ref, hub_config, progress=False)
    assert "\n" not in err.value.message
    assert_nothing_installed(store)


def test_unreachable_hub(store: ModelStore) -> None:
    closed = HubConfig(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(HubUnreachableError, match="cannot reach the Hugging Face Hub") as err:
        pull_hf(store, HfRef(MLX_REPO), closed, progress=False)
    assert "\n" not in err.value.message
    assert_nothing_installed(store)


def test_offline_mode_makes_no_request(store: ModelStore, hub: HubStandIn,
                                       hub_config: HubConfig,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError, match="HF_HUB_OFFLINE"):
        pull_hf(store, HfRef(MLX_REPO), hub_config, progress=False)
    assert hub.requests == []
    assert_nothing_installed(store)


def test_installed_model_survives_an_unreachable_hub(store: ModelStore,
                                                     hub_config: HubConfig) -> None:
    installed = pull_hf(store, HfRef(MLX_REPO), hub_config, progress=False)
    closed = HubConfig(f"http://127.0.0.1:{free_port()}")
    assert pull_hf(store, HfRef(MLX_REPO), closed, progress=False) == installed


# --- interruption and resume -----------------------------------------------------------------


def test_cut_off_pull_installs_nothing_then_resumes(store: ModelStore, hub: HubStandIn,
                                                    hub_config: HubConfig) -> None:
    weights = hub.repos[MLX_REPO]["main"].files["model.safetensors"]
    hub.cut_off("model.safetensors", weights.size // 2)
    with pytest.raises(HubUnreachableError, match="answered HTTP 503"):
        pull_hf(store, HfRef(MLX_REPO), hub_config, progress=False)
    assert_nothing_installed(store)
    assert main(["list", "--data-dir", str(store.root)]) == 0
    parts = list(area(store, MLX_REPO).glob("*.part"))
    assert len(parts) == 1
    kept = parts[0].stat().st_size
    assert 0 < kept <= weights.size // 2

    hub.restore()
    hub.requests.clear()
    manifest = pull_hf(store, HfRef(MLX_REPO), hub_config, progress=False)
    assert (store.weights_path(manifest) / "model.safetensors").read_bytes() == \
        weights.path.read_bytes()
    [resumed] = hub.served("model.safetensors")
    assert (resumed.range, resumed.status) == (f"bytes={kept}-", 206)
    assert resumed.body_bytes == weights.size - kept  # the kept bytes were not fetched again
    assert hub.served("config.json") == []  # finished before the cut: not fetched again
    assert not area(store, MLX_REPO).exists()


# --- settings and command line ---------------------------------------------------------------


def test_endpoint_from_settings_then_hf_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert HubConfig.from_settings(Settings()).endpoint == "https://huggingface.co"
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example/")
    assert HubConfig.from_settings(Settings()) == HubConfig("http://mirror.example")
    monkeypatch.setenv("MLXJAN_HF_ENDPOINT", "http://other.example")
    monkeypatch.setenv("MLXJAN_HF_TOKEN", "hf_secret")
    assert HubConfig.from_settings(Settings()) == HubConfig("http://other.example", "hf_secret")


@pytest.mark.usefixtures("restore_logging")
def test_cli_pulls_from_the_hub_named_by_hf_endpoint(
        tmp_path: Path, hub: HubStandIn, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    with running(hub.app()) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        assert main(["pull", f"{GGUF_REPO}:{GGUF_FILE}", "--id", "tiny", "--quiet", *data]) == 0
        assert main(["list", *data]) == 0
    out = capsys.readouterr().out
    assert "tiny: installed" in out and "tiny " in out and "4096" in out


@pytest.mark.usefixtures("restore_logging")
def test_cli_reports_an_unreachable_hub_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLXJAN_HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    assert main(["pull", MLX_REPO, "--quiet", "--data-dir", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlxjan: cannot reach the Hugging Face Hub") and "\n" not in err
    assert "Traceback" not in err
    assert ModelStore(tmp_path / "data").list() == []


def test_the_server_never_loads_the_hub_client() -> None:
    # Pulls are a CLI action: nothing the server imports can start a Hub download.
    code = ("import sys, mlxjan.server.app, mlxjan.runner; "
            "assert 'mlxjan.models.hf' not in sys.modules, 'hf imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
