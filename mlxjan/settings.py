"""One settings model. Precedence: command-line flags > env `MLXJAN_*` > config file > defaults.

Flags arrive as init kwargs, which pydantic-settings ranks first. The config file is TOML,
at `MLXJAN_CONFIG` or `<config dir>/mlxjan/config.toml`.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mlxjan.errors import MlxjanError
from mlxjan.keep_alive import parse_keep_alive
from mlxjan.machine import total_memory
from mlxjan.types import SamplingParams

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
# Of RAM, for models when no budget is set: on Apple Silicon about what Metal lets one
# process wire (its recommended working set), leaving the rest to the system and apps.
DEFAULT_BUDGET_SHARE = 0.75
EngineName = Literal["auto", "mlx", "llamacpp"]


def is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def default_data_dir() -> Path:
    """`MLXJAN_HOME`, else the platform's per-user data folder."""
    env = os.environ.get("MLXJAN_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "mlxjan"
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "mlxjan"


def default_config_file() -> Path:
    env = os.environ.get("MLXJAN_CONFIG")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "mlxjan" / "config.toml"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "mlxjan" / "config.toml"


def read_key_file(path: Path) -> str:
    """The API key in `path`, which must be readable by its owner only (mode 0600)."""
    try:
        mode = path.stat().st_mode
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read api_key_file {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ValueError(f"api_key_file {path} is readable by others: chmod 600 {path}")
    if not key:
        raise ValueError(f"api_key_file {path} is empty")
    return key


class Settings(BaseSettings):
    """Mirrors Jan's Local API Server settings, plus the engine and model store."""

    model_config = SettingsConfigDict(env_prefix="MLXJAN_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=1337, ge=1, le=65535)
    api_prefix: str = "/v1"
    api_key: SecretStr | None = None
    # A file holding the key (mode 0600), so it stays off command lines and plists.
    api_key_file: Path | None = None
    trusted_hosts: list[str] = Field(default_factory=list)
    cors_origins: list[str] = Field(default_factory=list)
    request_timeout: float = Field(default=600.0, gt=0)
    default_model: str = DEFAULT_MODEL
    engine: EngineName = "auto"
    data_dir: Path = Field(default_factory=default_data_dir)
    # None: the model's own trained context length, capped at max_context_length.
    context_length: int | None = Field(default=None, ge=256)
    max_context_length: int = Field(default=32768, ge=256)
    # None: one per physical core (performance cores on Apple Silicon).
    threads: int | None = Field(default=None, ge=1, le=512)
    # llama.cpp's flash attention; None: where it pays on this CPU (engine/llamacpp/decode.py).
    flash_attention: bool | None = None
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Temperature for requests that leave it out (Claude Code never sends one). Small local
    # models pick tools more reliably cooler; 0 is greedy.
    default_temperature: float = Field(default=0.8, ge=0, le=2)
    # Memory for snapshots of earlier prompts' KV caches, so interleaved conversations
    # (an agent and its subagents) each find their prefix again. 0 turns it off.
    prompt_cache_bytes: int = Field(default=2 * 1024**3, ge=0)
    # Disk for prompt-cache entries, so long prefixes survive a restart; 0 turns it off.
    # They live in `prompt_cache_dir`, default `<data dir>/cache`, one folder per model file.
    prompt_cache_disk_bytes: int = Field(default=4 * 1024**3, ge=0)
    prompt_cache_dir: Path | None = None
    # Answers an engine decodes together in one batch (llama.cpp: at most 4, each holding a
    # whole context); more wait for a free slot.
    max_batch_size: int = Field(default=8, ge=1, le=256)
    # Requests held at once, running or waiting; more are refused (503 / Anthropic 529).
    max_pending_requests: int = Field(default=32, ge=1, le=10_000)
    # Seconds between keep-alive events (SSE comments, Anthropic pings) while the prompt is
    # being processed and no token has come yet.
    keepalive_interval: float = Field(default=5.0, gt=0, le=300)
    # With tools on offer, a call the model begins in free text is regenerated under the
    # tool-call grammar (valid by construction). Off: calls are only parsed.
    tool_grammar: bool = True
    # Reasoning tokens an answer may spend before the server closes its reasoning, for
    # requests that set no budget of their own (None: only max_tokens bounds it).
    reasoning_budget: int | None = Field(default=None, ge=0)
    # Responses API answers kept (`store: true`) for `previous_response_id` and
    # GET /v1/responses/{id}, in `<data dir>/responses.sqlite3`: past this many bytes the
    # oldest go first (0 stores nothing), and none older than this many days (OpenAI: 30).
    responses_store_bytes: int = Field(default=256 * 1024**2, ge=0)
    responses_store_days: float = Field(default=30.0, gt=0)
    # Which field of an OpenAI chat message carries the reasoning: `reasoning_content`
    # (llama.cpp, DeepSeek, LM Studio), `reasoning` (Ollama, mlx-lm, newer vLLM), or both.
    reasoning_field: Literal["reasoning_content", "reasoning", "both"] = "both"
    # Local models that Claude's tiers map to (any `claude-*opus*` name, ...); None: default.
    anthropic_opus_model: str | None = None
    anthropic_sonnet_model: str | None = None
    anthropic_haiku_model: str | None = None
    # How long a model stays loaded after its last request (Ollama's keep_alive: seconds or a
    # duration such as "5m"; 0 unloads at once; -1 never). Requests may set their own.
    keep_alive: str = "5m"
    # Models resident at once, and the memory they may use together (None: 75% of RAM, the
    # unified memory on Apple Silicon). To make room, idle models are unloaded, least
    # recently used first; models answering requests never are.
    max_loaded_models: int = Field(default=3, ge=1, le=64)
    memory_budget_bytes: int | None = Field(default=None, ge=64 * 1024**2)
    # When every resident model is busy and a new one does not fit: "wait" for one to become
    # idle (up to request_timeout), or "refuse" with 503 and Retry-After.
    when_full: Literal["wait", "refuse"] = "wait"
    # Models that are never unloaded for idleness or for room (only by hand).
    pinned_models: list[str] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # When set, logs go to this file too, rotated at 10 MB with 5 old files kept.
    log_file: Path | None = None
    # A port held by another program: wait until it is free (the launchd/systemd service
    # passes --wait-for-port), instead of exiting at once with status 3.
    wait_for_port: bool = False
    # Hugging Face Hub for `mlxjan pull org/repo`: None falls back to HF_ENDPOINT, then
    # huggingface.co; the token to HF_TOKEN or the `hf auth login` one.
    hf_endpoint: str | None = None
    hf_token: SecretStr | None = None

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _valid_keep_alive(cls, value: object) -> str:
        text = str(value)
        try:
            parse_keep_alive(text)
        except MlxjanError as exc:
            raise ValueError(exc.message) from exc
        return text

    @model_validator(mode="after")
    def _key_from_file(self) -> Settings:
        if self.api_key is None and self.api_key_file is not None:
            self.api_key = SecretStr(read_key_file(self.api_key_file))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=default_config_file())
        return (init_settings, env_settings, toml)

    def sampling_defaults(self) -> SamplingParams:
        return SamplingParams(temperature=self.default_temperature)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def self_checks_dir(self) -> Path:
        """Remembered load-time self-checks (which kernel paths are right on this CPU)."""
        return self.data_dir / "self-checks"

    @property
    def responses_db(self) -> Path:
        """Stored Responses API answers (SQLite)."""
        return self.data_dir / "responses.sqlite3"

    @property
    def cache_dir(self) -> Path:
        return self.prompt_cache_dir or self.data_dir / "cache"

    def default_keep_alive(self) -> float | None:
        """Seconds a model stays loaded after its last request; None: until unloaded."""
        return parse_keep_alive(self.keep_alive)

    def memory_budget(self) -> int:
        """Bytes that resident models may use together."""
        if self.memory_budget_bytes is not None:
            return self.memory_budget_bytes
        return int(total_memory() * DEFAULT_BUDGET_SHARE)

    def resolved_engine(self) -> Literal["mlx", "llamacpp"]:
        """`auto`: MLX on Apple Silicon, where it is the fastest path; llama.cpp elsewhere."""
        if self.engine == "auto":
            return "mlx" if is_apple_silicon() else "llamacpp"
        return self.engine
