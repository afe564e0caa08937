"""Read the few fields the store needs from an MLX (Hugging Face layout) model folder.

Architecture and trained context length come from `config.json`; the chat template from
`chat_template.jinja` (newer transformers save it there), `chat_template.json`, or
`tokenizer_config.json`, in that order.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from mlxjan.errors import ModelStoreError
from mlxjan.models.gguf_meta import ModelInfo

_M = TypeVar("_M", bound=BaseModel)
# Encoder families that embed text (Hugging Face model_type); a sentence-transformers folder
# (modules.json) embeds whatever its model.
EMBEDDING_TYPES = frozenset({"bert", "nomic_bert", "roberta", "xlm-roberta", "modernbert",
                             "distilbert", "mpnet", "e5", "jina_bert"})


class _TextConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model_type: str | None = None
    max_position_embeddings: int | None = None


class _ModelConfig(_TextConfig):
    # Vision-language models keep the language model's fields in a nested text_config.
    text_config: _TextConfig | None = None


class _NamedTemplate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    template: str


class _TemplateHolder(BaseModel):
    """tokenizer_config.json or chat_template.json: a template, or a list of named ones."""

    model_config = ConfigDict(extra="ignore")

    chat_template: str | list[_NamedTemplate] | None = None

    def default(self) -> str | None:
        if not isinstance(self.chat_template, list):
            return self.chat_template
        named = {t.name: t.template for t in self.chat_template}
        return named.get("default") or next(iter(named.values()), None)


def read_mlx_info(folder: Path) -> ModelInfo:
    config = _load(folder / "config.json", _ModelConfig)
    if config is None:
        raise ModelStoreError(f"{folder} has no config.json: not an MLX model folder")
    text = config.text_config or _TextConfig()
    return ModelInfo(
        architecture=config.model_type or text.model_type,
        context_length=config.max_position_embeddings or text.max_position_embeddings,
        chat_template=_chat_template(folder),
        kind="embedding" if (config.model_type in EMBEDDING_TYPES
                             or (folder / "modules.json").is_file()) else "chat",
    )


def _chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        holder = _load(folder / name, _TemplateHolder)
        if holder is not None and (template := holder.default()):
            return template
    return None


def _load(path: Path, model: type[_M]) -> _M | None:
    if not path.is_file():
        return None
    try:
        return model.model_validate_json(path.read_bytes())
    except ValidationError as exc:  # also raised for malformed JSON
        raise ModelStoreError(f"{path.name} is not valid: {exc.errors()[0]['msg']}") from exc
