"""The dtypes a model loads in (`--dtype`), apart from the loading code so the command line's help reads them
without importing torch."""

DTYPES = ("auto", "float32", "bfloat16", "float16")  # the checkpoint's own, or one of these
