"""Model support: per-architecture layouts (where the attention modules are), loading local checkpoints
and processors, the differences between transformers versions, Kimi-VL."""
