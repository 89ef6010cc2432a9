"""agno-coordinator: one OpenAI-compatible endpoint that picks a model per request by
complexity, cost and latency, falls back across providers and accounts usage and cost."""
