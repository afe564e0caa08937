"""Text completion: OpenAI's legacy `/v1/completions` and llama-server's `/infill`."""
