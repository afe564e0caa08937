"""A model made from an installed one with another chat template (`mlxjan create`), as an
Ollama Modelfile's `FROM` and `TEMPLATE` make one, or llama-server's --chat-template-file
serves one: for a template that is wrong, or that should think. The weights are
hard-linked, not copied, where the file system allows."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mlxjan.errors import InvalidRequestError, ModelNotFoundError
from mlxjan.models.store import MANIFEST, Manifest, ModelStore, new_manifest


def create_variant(store: ModelStore, base_id: str, new_id: str,
                   chat_template: str) -> Manifest:
    """Install `new_id`: `base_id`'s weights under `chat_template`."""
    base = store.get(base_id)
    if base is None:
        raise ModelNotFoundError(base_id)
    if new_id == base_id:
        raise InvalidRequestError("the new model needs an id of its own", param="id")
    if not chat_template.strip():
        raise InvalidRequestError("the chat template is empty", param="chat_template")
    with store.staging(new_id) as staged:
        _link(store.weights_path(base), staged / base.file)
        fields = base.model_dump() | {"id": new_id, "source": f"{base.id} (own chat template)",
                                      "chat_template": chat_template}
        fields.pop("created")
        return store.install(staged, new_manifest(**fields))


def _link(source: Path, target: Path) -> None:
    """Hard-link a file, or every file of a folder but its manifest; copy across devices."""
    if source.is_dir():
        for path in source.rglob("*"):
            if path.is_file() and path.relative_to(source).as_posix() != MANIFEST:
                _link(path, target / path.relative_to(source))
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
