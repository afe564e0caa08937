"""Inference engines. Protocol-free: they see GenerationRequest and emit typed events."""
