"""Rebuild a Hugging Face `tokenizer.json` + `tokenizer_config.json` from GGUF metadata.

transformers' own GGUF tokenizer path needs torch, which this project does not ship, so the
`tokenizers` pipeline is assembled here: byte-level BPE for "gpt2" vocabularies (with the
pre-tokenizer regexes llama.cpp picks from `tokenizer.ggml.pre`, see pretokenizers.py) and
byte-fallback BPE with merges derived from the piece scores for SentencePiece "llama"
vocabularies (Gemma, Llama 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters.gguf_meta import GGUFMeta
from converters.pretokenizers import PRE_TOKENIZERS, PreTokenizer
from mlxjan.errors import ConversionError

# llama.cpp's token types (gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

@dataclass(frozen=True)
class GGUFVocab:
    """The tokenizer part of GGUF metadata."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    unk_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    chat_template: str | None

    @classmethod
    def from_meta(cls, meta: GGUFMeta) -> GGUFVocab:
        tokens = [str(t) for t in meta.tokenizer_list("tokens")]
        types = [int(t) for t in meta.tokenizer_list("token_type")] or [NORMAL] * len(tokens)
        model = str(meta.get("tokenizer.ggml.model", ""))
        pre = str(meta.get("tokenizer.ggml.pre", "default"))

        def tid(key: str) -> int | None:
            value = meta.get(f"tokenizer.ggml.{key}_token_id")
            return int(value) if value is not None else None

        return cls(
            model=model, pre=pre,
            tokens=tokens, types=types,
            scores=[float(s) for s in meta.tokenizer_list("scores")],
            merges=[str(m) for m in meta.tokenizer_list("merges")],
            bos_id=tid("bos"), eos_id=tid("eos"), pad_id=tid("padding"), unk_id=tid("unknown"),
            add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", _bos_default(model, pre))),
            add_eos=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
            add_space_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", model == "llama")),
            chat_template=meta.get("tokenizer.chat_template"),
        )

    def token(self, token_id: int | None) -> str | None:
        return self.tokens[token_id] if token_id is not None else None


def _bos_default(model: str, pre: str) -> bool:
    """llama.cpp's default when the GGUF has no add_bos flag: SPM adds BOS; BPE only for
    some pre-tokenizers (Llama 3's, Tekken)."""
    known = PRE_TOKENIZERS.get(pre)
    return model == "llama" or (model == "gpt2" and known is not None and known.add_bos)


def build_tokenizer(vocab: GGUFVocab) -> Any:
    """A `tokenizers.Tokenizer` equivalent to llama.cpp's for this vocabulary."""
    if not vocab.tokens:
        raise ConversionError("the GGUF file has no tokenizer vocabulary")
    if vocab.model == "gpt2":
        tok = _byte_level_bpe(vocab)
    elif vocab.model == "llama":
        tok = _sentencepiece_bpe(vocab)
    else:
        raise ConversionError(f"unsupported GGUF tokenizer model '{vocab.model}' "
                              "(supported: gpt2, llama)")
    tok.add_tokens(_added_tokens(vocab))
    tok.post_processor = _post_processor(vocab)
    return tok


def _byte_level_bpe(vocab: GGUFVocab) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    pre = _pre_tokenizer(vocab.pre)
    merges = [_split_merge(m) for m in vocab.merges]
    tok = Tokenizer(models.BPE(vocab=_vocab_dict(vocab.tokens), merges=merges,
                               fuse_unk=False, byte_fallback=False,
                               ignore_merges=pre.ignore_merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        *(pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False)
          for regex in pre.regexes),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    if pre.nfc:
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    return tok


def _pre_tokenizer(name: str) -> PreTokenizer:
    pre = PRE_TOKENIZERS.get(name)
    if pre is None:
        raise ConversionError(f"unsupported BPE pre-tokenizer '{name}': this GGUF cannot be "
                              "converted for the MLX engine (serve it with --engine llamacpp); "
                              f"supported: {', '.join(sorted(PRE_TOKENIZERS))}")
    return pre


def _split_merge(merge: str) -> tuple[str, str]:
    left, sep, right = merge.partition(" ")
    if not sep:
        raise ConversionError(f"malformed BPE merge {merge!r} in the GGUF vocabulary")
    return left, right


def _vocab_dict(tokens: list[str]) -> dict[str, int]:
    # A piece listed twice keeps its first id, as llama.cpp's token-to-id map does.
    found: dict[str, int] = {}
    for i, piece in enumerate(tokens):
        found.setdefault(piece, i)
    return found


def _sentencepiece_bpe(vocab: GGUFVocab) -> Any:
    """SentencePiece as BPE: merges ranked by the score of the piece they make."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    unk = vocab.token(vocab.unk_id)
    tok = Tokenizer(models.BPE(vocab=_vocab_dict(vocab.tokens), merges=_spm_merges(vocab),
                               unk_token=unk, fuse_unk=True, byte_fallback=True))
    replace = normalizers.Replace(" ", "\u2581")
    tok.normalizer = (normalizers.Sequence([normalizers.Prepend("\u2581"), replace])
                      if vocab.add_space_prefix else replace)
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if vocab.add_space_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)
    return tok


def _spm_merges(vocab: GGUFVocab) -> list[tuple[str, str]]:
    ids = _vocab_dict(vocab.tokens)
    scores = vocab.scores or [0.0] * len(vocab.tokens)
    ranked: list[tuple[float, int, int, str, str]] = []
    for piece, pid in ids.items():
        if vocab.types[pid] not in (NORMAL, USER_DEFINED):
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                ranked.append((-scores[pid], ids[left], ids[right], left, right))
    ranked.sort()
    return [(left, right) for _, _, _, left, right in ranked]


def _added_tokens(vocab: GGUFVocab) -> list[Any]:
    """Control and user-defined tokens, matched whole before the model splits text."""
    from tokenizers import AddedToken

    return [
        AddedToken(vocab.tokens[i], special=kind != USER_DEFINED, normalized=False)
        for i, kind in enumerate(vocab.types)
        if kind in (CONTROL, USER_DEFINED, UNKNOWN) and vocab.tokens[i]
    ]


def _post_processor(vocab: GGUFVocab) -> Any:
    from tokenizers import processors

    bos = vocab.token(vocab.bos_id) if vocab.add_bos else None
    eos = vocab.token(vocab.eos_id) if vocab.add_eos else None
    if bos is None and eos is None:
        if vocab.model == "gpt2":
            return processors.ByteLevel(trim_offsets=False)
        return None
    single = " ".join([*(["$A"] if bos is None else [bos, "$A"]), *([eos] if eos else [])])
    pair = single + " " + " ".join(["$B:1", *([eos + ":1"] if eos else [])])
    specials = [(t, vocab.tokens.index(t)) for t in (bos, eos) if t is not None]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


def tokenizer_config(vocab: GGUFVocab, context_length: int | None) -> dict[str, Any]:
    """`tokenizer_config.json`: special tokens, template and flags transformers reads."""
    decoder = {
        str(i): {"content": vocab.tokens[i], "lstrip": False, "normalized": False,
                 "rstrip": False, "single_word": False, "special": kind != USER_DEFINED}
        for i, kind in enumerate(vocab.types) if kind in (CONTROL, USER_DEFINED, UNKNOWN)
    }
    config: dict[str, Any] = {
        # The generic fast class loads tokenizer.json as written; the per-model classes of
        # transformers 5 rebuild their own pipeline and would drop ours.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": decoder,
        "bos_token": vocab.token(vocab.bos_id),
        "eos_token": vocab.token(vocab.eos_id),
        "pad_token": vocab.token(vocab.pad_id),
        "unk_token": vocab.token(vocab.unk_id),
        "add_bos_token": vocab.add_bos,
        "add_eos_token": vocab.add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context_length or 1 << 20,
    }
    if vocab.chat_template:
        config["chat_template"] = vocab.chat_template
    return config


def write_tokenizer(meta: GGUFMeta, out_dir: Path) -> GGUFVocab:
    """Write `tokenizer.json` and `tokenizer_config.json` for the GGUF's vocabulary."""
    vocab = GGUFVocab.from_meta(meta)
    build_tokenizer(vocab).save(str(out_dir / "tokenizer.json"))
    context = meta.arch_get("context_length")
    config = tokenizer_config(vocab, int(context) if context is not None else None)
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return vocab
