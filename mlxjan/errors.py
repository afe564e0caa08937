"""Typed errors. Raised anywhere, rendered once at the edge in the caller's protocol.

Each class carries its HTTP status and the codes each protocol uses for it, so rendering is
a table lookup, never a guess from the message text.
"""

from __future__ import annotations


class MlxjanError(Exception):
    """Base of every error the server reports to a client."""

    status: int = 500
    openai_type: str = "server_error"
    code: str | None = None
    anthropic_type: str = "api_error"
    anthropic_status: int | None = None  # when Anthropic's status differs (529 overloaded)

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.anthropic_message = message
        self.param = param


class InvalidRequestError(MlxjanError):
    status = 400
    openai_type = "invalid_request_error"
    code = "invalid_request"
    anthropic_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    code = "context_length_exceeded"

    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        super().__init__(
            f"This model's maximum context length is {context_length} tokens, "
            f"but the prompt has {prompt_tokens} tokens. Shorten the messages.",
            param="messages",
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length
        # Anthropic clients (Claude Code) parse this exact wording to compact the context.
        self.anthropic_message = f"prompt is too long: {prompt_tokens} tokens > " \
            f"{context_length} maximum"


class FillInMiddleUnsupportedError(InvalidRequestError):
    code = "fim_unsupported"

    def __init__(self, model: str, param: str) -> None:
        super().__init__(
            f"The model '{model}' has no fill-in-the-middle tokens, so it cannot complete "
            f"between a prefix and a suffix. Use a coder model (Qwen2.5-Coder, StarCoder2, "
            f"CodeGemma, DeepSeek-Coder, Codestral, CodeLlama) or leave out the suffix.",
            param=param)


class InputTooLongError(ContextLengthExceededError):
    """An embedding input longer than the model's context: refused, never cut short."""

    def __init__(self, index: int, tokens: int, context_length: int) -> None:
        super().__init__(tokens, context_length)
        self.message = (f"This model's maximum context length is {context_length} tokens, "
                        f"but input {index} has {tokens} tokens. Shorten or split it.")
        self.param = "input"
        self.index = index


class AuthenticationError(MlxjanError):
    status = 401
    openai_type = "invalid_request_error"
    code = "invalid_api_key"
    anthropic_type = "authentication_error"


class ForbiddenError(MlxjanError):
    status = 403
    openai_type = "invalid_request_error"
    code = "forbidden"
    anthropic_type = "permission_error"


class ModelNotFoundError(MlxjanError):
    status = 404
    openai_type = "invalid_request_error"
    code = "model_not_found"
    anthropic_type = "not_found_error"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist or is not installed. "
            f"Install it with `mlxjan pull {model}`.",
            param="model",
        )
        self.model = model


class WrongModelKindError(InvalidRequestError):
    """A chat route asked for an embedding model, or /v1/embeddings for a chat model."""

    code = "wrong_model_kind"

    def __init__(self, model: str, kind: str) -> None:
        use = ("it serves POST /v1/embeddings only, not chat or completions"
               if kind == "embedding" else "POST /v1/embeddings needs an embedding model, "
               "such as nomic-embed-text-v1.5 (`mlxjan pull nomic-embed-text-v1.5`)")
        super().__init__(f"The model '{model}' is a{'n' if kind == 'embedding' else ''} "
                         f"{kind} model: {use}.", param="model")
        self.model = model
        self.kind = kind


class EmbeddingFormatError(InvalidRequestError):
    """An embedding model in a format no embedding engine here reads (MLX folders)."""

    code = "embedding_format_unsupported"

    def __init__(self, model: str, model_format: str) -> None:
        super().__init__(
            f"The model '{model}' is an embedding model in {model_format.upper()} format, "
            "which mlxjan cannot serve embeddings from yet: install it as a GGUF file "
            "(e.g. `mlxjan pull nomic-embed-text-v1.5`).", param="model")
        self.model = model


class NotFoundError(MlxjanError):
    status = 404
    openai_type = "invalid_request_error"
    code = "not_found"
    anthropic_type = "not_found_error"


class PayloadTooLargeError(MlxjanError):
    status = 413
    openai_type = "invalid_request_error"
    code = "request_too_large"
    anthropic_type = "request_too_large"


class InsecureBindError(MlxjanError):
    """A configuration the server refuses to start with."""

    code = "insecure_bind"


class UnsupportedMediaTypeError(MlxjanError):
    status = 415
    openai_type = "invalid_request_error"
    code = "unsupported_media_type"
    anthropic_type = "invalid_request_error"


class OverloadedError(MlxjanError):
    status = 503
    openai_type = "server_error"
    code = "overloaded"
    anthropic_type = "overloaded_error"
    anthropic_status = 529


class EngineError(MlxjanError):
    """The inference engine failed (model failed to load, decode error)."""

    status = 500
    openai_type = "server_error"
    code = "engine_error"
    anthropic_type = "api_error"


class ResponseStoreError(MlxjanError):
    """The stored responses database could not be read or written (disk full, locked)."""

    status = 500
    openai_type = "server_error"
    code = "response_store_error"
    anthropic_type = "api_error"


class ModelStoreError(MlxjanError):
    """Fetching, verifying or installing a model failed (CLI side)."""

    code = "model_store_error"


class ConversionError(ModelStoreError):
    """Converting a model (GGUF or safetensors -> MLX) failed.

    Served, it means the model asked for cannot run on this engine (an architecture or
    tokenizer the converter does not know): the client's choice of model, so a 400, not a
    server fault.
    """

    status = 400
    openai_type = "invalid_request_error"
    code = "conversion_error"
    anthropic_type = "invalid_request_error"


class UnsupportedArchitectureError(ConversionError):
    code = "unsupported_architecture"

    def __init__(self, architecture: str, supported: tuple[str, ...]) -> None:
        super().__init__(
            f"cannot convert architecture '{architecture}': supported are "
            f"{', '.join(supported)}.",
        )
        self.architecture = architecture


class HubUnreachableError(ModelStoreError):
    """The Hugging Face Hub (or HF_ENDPOINT) could not be reached, or offline mode is on."""

    code = "hub_unreachable"


class ModelNotFoundOnHubError(ModelStoreError):
    """The Hub answered, but the repo, revision or file does not exist (or is private/gated)."""

    code = "model_not_found_on_hub"


class InvalidModelIdError(InvalidRequestError):
    code = "invalid_model_id"

    def __init__(self, model_id: str) -> None:
        super().__init__(
            f"'{model_id}' is not a valid model id: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit.",
            param="model",
        )


class RequestTimeoutError(MlxjanError):
    status = 408
    openai_type = "server_error"
    code = "request_timeout"
    anthropic_type = "api_error"


class ModelSelfCheckError(EngineError):
    """The model computed wrong answers on this machine at load, on every kernel path."""

    code = "model_self_check_failed"


class WorkerCrashedError(EngineError):
    """The model's worker process died under the request (a native crash, out of memory);
    the next request starts a new one."""

    code = "worker_crashed"

    def __init__(self, model: str, cause: str) -> None:
        super().__init__(f"The worker process of model '{model}' {cause} while serving this "
                         "request. The next request restarts it; retry.")


class ModelFailedError(EngineError):
    """The model's worker crashed again and again: it is not restarted until loaded by hand."""

    status = 503
    code = "model_failed"

    def __init__(self, model: str, cause: str) -> None:
        super().__init__(f"Model '{model}' is marked failed after repeated crashes (last: "
                         f"{cause}). Load it again by hand (`mlxjan load {model}` or POST "
                         f"/v1/models/{model}/load) once the cause is fixed.")


class ModelTooLargeError(InvalidRequestError):
    """The model needs more memory than the whole budget, even with nothing else loaded."""

    code = "model_too_large"

    def __init__(self, model: str, needed: int, budget: int) -> None:
        super().__init__(
            f"Model '{model}' needs about {_gib(needed)} of memory, more than the "
            f"{_gib(budget)} budget for loaded models. Raise memory_budget_bytes "
            "(MLXJAN_MEMORY_BUDGET_BYTES), or use a smaller context length or model.",
            param="model")
        self.needed = needed
        self.budget = budget


class ModelsBusyError(OverloadedError):
    """A model must load, and every resident model that could make room is answering."""

    code = "models_busy"


def _gib(size: int) -> str:
    return f"{size / 1024**3:.2f} GiB"
