"""The model side: ModelSpec, config.json import, exact parameter counts, weight formats, KV bytes."""
