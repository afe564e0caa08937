"""Everything MLX: engine thread, batch, llguidance, state, vocab, conversion cache."""
