"""Serving a model behind an OpenAI-compatible HTTP endpoint (the CPU path; vLLM on GPU servers)."""
