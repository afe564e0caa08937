"""OpenAI's `POST /v1/embeddings`: schemas, serving, routes."""
