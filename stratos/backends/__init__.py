"""Generation backends: local Hugging Face, OpenAI-compatible HTTP, stored completions."""
