"""The sizes the testbed's tiny random-weight decoders share: small enough for a 2-core CPU, with
grouped-query attention and a few heads per layer."""

HIDDEN = 64
INTERMEDIATE = 128
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
LAYERS = 4

DECODER = dict(hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_attention_heads=HEADS,
               num_key_value_heads=KV_HEADS)
