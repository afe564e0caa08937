"""Chat templates, and later tool-call parsing and constrained decoding."""
