"""Reference decoding for the contrastive baselines: every step recomputed from scratch, no cache."""

import torch

from functional_heads.evaluation.methods.contrastive import with_generated


def manual_contrastive_steps(model, inputs, second, combine, steps):
    """Greedy decoding by full forward passes of both views at every step: the tokens and combined scores."""
    generated = torch.zeros(inputs["input_ids"].shape[0], 0, dtype=torch.long)
    scores = []
    for _ in range(steps):
        main = model(**with_generated(inputs, generated), use_cache=False).logits[:, -1]
        other = model(**with_generated(second, generated), use_cache=False).logits[:, -1]
        combined = combine(main.float(), other.float())
        scores.append(combined)
        generated = torch.cat([generated, combined.argmax(-1, keepdim=True)], 1)
    return generated, scores


def assert_same_scores(got_scores, want_scores):
    for got, want in zip(got_scores, want_scores):
        finite = torch.isfinite(want)
        assert torch.equal(torch.isfinite(got), finite) and torch.allclose(got[finite], want[finite], atol=1e-3)
