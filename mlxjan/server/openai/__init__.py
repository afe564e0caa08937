"""The OpenAI-compatible API: schemas, pure converters, serving and thin routes."""
