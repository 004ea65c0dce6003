"""FaultMaven sessions: server-side session lifecycle with batched background cleanup."""

__version__ = "0.1.0"
