"""The Anthropic Messages API: schemas, pure converters, the stream state machine, routes."""
