"""Vendor adapters: every LLM behind one small interface (complete, count_tokens, aclose)."""
