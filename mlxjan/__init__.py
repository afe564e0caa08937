"""mlxjan: a local LLM server speaking the OpenAI and Anthropic APIs."""

__version__ = "0.1.0"
