"""HTTP only: the app factory, security, SSE framing and one package per protocol."""
