"""CGD, CLIP-guided decoding (Deng et al. 2024): a sentence-level beam search scored by image-text similarity.

Each kept candidate is continued by `samples` sampled sentences (top-k 5, temperature 0.2, up to the next
token holding '.', '?' or '!', or the end). A candidate scores beta x the mean cosine similarity between
the image and each of its sentences under a CLIP/SigLIP model, plus alpha x the mean log-probability of
its tokens (from the model's raw logits). The `beams` best unfinished candidates go on; the search stops
once `samples` candidates have ended and returns the best of those. Published defaults: SigLIP
so400m-patch14-384, alpha 0.01, beta 1, 3 beams, 3 samples (the authors' COCO script).
CGD always samples, with its own settings, from a random state seeded at each item (so an item's answer
does not depend on the batch it came in) inside a scoped fork (so the caller's random state is untouched).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer, StoppingCriteria

from ...models.compat import projected_features, returned_cache
from ...models.loading import check_context, local_folder, prompt_inputs, to_model_device
from ...utils.errors import UserError
from ...utils.imports import requires
from ..seeding import seeded
from .contrastive import SEQUENCE_INPUTS, continuing, with_generated

TERMINALS = ".?!"
# how each dual encoder's text side was trained to be padded (SigLIP: always to 64 tokens)
TEXT_PADDING = {"siglip": {"padding": "max_length", "max_length": 64},
                "siglip2": {"padding": "max_length", "max_length": 64}}


@dataclass(frozen=True)
class CGDConfig:
    clip: str = ""  # local folder of a CLIP or SigLIP model, e.g. google/siglip-so400m-patch14-384
    beams: int = 3  # candidates kept after each sentence
    samples: int = 3  # sentences sampled per candidate; also how many ended candidates stop the search
    top_k: int = 5
    temperature: float = 0.2
    alpha: float = 0.01  # weight of the mean token log-probability
    beta: float = 1.0  # weight of the mean sentence-image similarity
    seed: int = 0

    def __post_init__(self):
        if not self.clip:
            raise UserError("CGD needs a CLIP or SigLIP model: give its local folder as clip (fheads eval: "
                            "--method-option clip=PATH), e.g. a download of google/siglip-so400m-patch14-384, "
                            "the model CGD's authors use.")
        if self.beams < 1 or self.samples < 1 or self.top_k < 1 or self.temperature <= 0:
            raise UserError(f"CGD needs beams, samples, top_k >= 1 and temperature > 0, got {self}.")


class ImageTextSimilarity:
    """Cosine similarity of an image and texts under a CLIP-style dual encoder from a local folder."""

    def __init__(self, path: str | Path):
        folder = local_folder(path)
        self.model_type = AutoConfig.from_pretrained(folder).model_type
        if self.model_type == "siglip":  # its tokenizer is a sentencepiece model: checked before the load
            requires("CGD's SigLIP tokenizer", "sentencepiece", "google.protobuf")
        self.model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
        if not (hasattr(self.model, "get_image_features") and hasattr(self.model, "get_text_features")):
            raise UserError(f"CGD's clip must be a CLIP-style dual encoder (CLIP, SigLIP); {path} holds a "
                            f"'{self.model_type}' model without image and text features.")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.image_processor = AutoImageProcessor.from_pretrained(folder)

    def to(self, device) -> "ImageTextSimilarity":
        self.model.to(device)
        return self

    @torch.no_grad()
    def image(self, image: Image.Image) -> torch.Tensor:
        inputs = self.image_processor(images=image.convert("RGB"), return_tensors="pt").to(self.model.device)
        return F.normalize(projected_features(self.model.get_image_features(**inputs)), dim=-1)[0]

    @torch.no_grad()
    def __call__(self, image_features: torch.Tensor, texts: Sequence[str]) -> list[float]:
        padding = TEXT_PADDING.get(self.model_type, {"padding": True})
        inputs = self.tokenizer(list(texts), truncation=True, return_tensors="pt", **padding).to(self.model.device)
        text = F.normalize(projected_features(self.model.get_text_features(**inputs)), dim=-1)
        return (text @ image_features).tolist()


@dataclass
class Sentence:
    tokens: list[int]
    logprobs: list[float]
    text: str
    ended: bool  # the model's end of sequence is in it


@dataclass
class Candidate:
    tokens: list[int] = field(default_factory=list)
    similarities: list[float] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)

    def score(self, cfg: CGDConfig) -> float:
        def mean(values):
            return sum(values) / len(values) if values else 0.0
        return cfg.beta * mean(self.similarities) + cfg.alpha * mean(self.logprobs)


def search(sample: Callable[[list[int], int], list[Sentence]], similarity: Callable[[list[str]], list[float]],
           cfg: CGDConfig, max_new_tokens: int) -> Candidate:
    """The sentence-level search. `sample(prefix, budget)` draws `cfg.samples` sentences continuing the
    generated tokens `prefix`; `similarity(texts)` scores sentences against the image."""
    beams, ended = [Candidate()], []
    while beams and len(ended) < cfg.samples:
        grown = []
        for beam in beams:
            sentences, seen = [], set()
            for sentence in sample(beam.tokens, max_new_tokens - len(beam.tokens)):
                if sentence.text not in seen:  # a sentence drawn twice is one candidate
                    seen.add(sentence.text)
                    sentences.append(sentence)
            scored = [s for s in sentences if s.text]
            similarities = dict(zip([s.text for s in scored], similarity([s.text for s in scored]) if scored else []))
            for s in sentences:
                child = Candidate(beam.tokens + s.tokens, beam.similarities + ([similarities[s.text]] if s.text else []),
                                  beam.logprobs + s.logprobs)
                done = s.ended or len(child.tokens) >= max_new_tokens
                (ended if done else grown).append(child)
        beams = sorted(grown, key=lambda c: c.score(cfg), reverse=True)[:cfg.beams]
    return max(ended or beams, key=lambda c: c.score(cfg))


class SentenceEnd(StoppingCriteria):
    """Stops a row once its newest token holds a sentence terminal."""

    def __init__(self, terminal_ids: torch.Tensor):
        self.terminal_ids = terminal_ids

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.isin(input_ids[:, -1], self.terminal_ids.to(input_ids.device))


def terminal_token_ids(tokenizer) -> torch.Tensor:
    """The ids of the tokens whose text holds '.', '?' or '!'."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return torch.tensor([i for i, text in enumerate(texts) if any(c in text for c in TERMINALS)], dtype=torch.long)


def sentence_sampler(model, tokenizer, rows: dict, cfg: CGDConfig, terminal_ids: torch.Tensor,
                     eos_ids: set[int]) -> Callable[[list[int], int], list[Sentence]]:
    """`sample(prefix, budget)` for `search`: `rows` holds the prompt once per sample. The prompt, image
    included, is encoded once: every call continues a copy of its KV cache (all but its last token, so
    that each call feeds at least one token)."""
    head = {k: v[:, :-1] if k in SEQUENCE_INPUTS else v for k, v in rows.items()}
    prompt_cache = returned_cache(model(**head, use_cache=True, logits_to_keep=1))
    terminal_set = set(terminal_ids.tolist())

    def sample(prefix: list[int], budget: int) -> list[Sentence]:
        n = rows["input_ids"].shape[0]
        inputs = with_generated(rows, torch.tensor([prefix] * n, dtype=torch.long).view(n, len(prefix)))
        start = inputs["input_ids"].shape[1]
        out = model.generate(**continuing(model, inputs, copy.deepcopy(prompt_cache)), do_sample=True, top_k=cfg.top_k,
                             top_p=1.0, temperature=cfg.temperature, max_new_tokens=budget,
                             stopping_criteria=[SentenceEnd(terminal_ids)], output_logits=True,
                             return_dict_in_generate=True)
        new = out.sequences[:, start:].cpu()
        logprobs = torch.stack(out.logits, 1).float().log_softmax(-1).cpu().gather(-1, new[..., None])[..., 0]
        sentences = []
        for tokens, scores in zip(new.tolist(), logprobs.tolist()):
            stops = [i for i, t in enumerate(tokens) if t in eos_ids or t in terminal_set]
            length = stops[0] + 1 if stops else len(tokens)
            tokens = tokens[:length]
            sentences.append(Sentence(tokens, scores[:length], tokenizer.decode(tokens, skip_special_tokens=True)
                                      .strip(), any(t in eos_ids for t in tokens)))
        return sentences

    return sample


def cgd_generate(model, processor, scorer: ImageTextSimilarity, images: Sequence[Image.Image],
                 prompts: Sequence[str], cfg: CGDConfig, terminal_ids: torch.Tensor,
                 max_new_tokens: int = 1024, **ignored) -> torch.Tensor:
    """The generated tokens of each prompt (right-padded [batch, longest]); one search per item."""
    tokenizer = processor.tokenizer
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    answers = []
    # every prompt is checked against the context before any search starts (one search is long)
    check_context(model, prompt_inputs(processor, images, prompts))
    for image, prompt in zip(images, prompts):
        rows = to_model_device(prompt_inputs(processor, [image] * cfg.samples, [prompt] * cfg.samples), model)
        with seeded(cfg.seed, model.device):  # per item: its answer does not depend on its batch
            sample = sentence_sampler(model, tokenizer, rows, cfg, terminal_ids, eos_ids)
            features = scorer.image(image)
            answers.append(search(sample, lambda texts: scorer(features, texts), cfg, max_new_tokens).tokens)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids, default=0)
    out = torch.full((len(answers), max(map(len, answers), default=0)), pad, dtype=torch.long)
    for row, tokens in enumerate(answers):
        out[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return out


__all__ = ["CGDConfig", "Candidate", "ImageTextSimilarity", "Sentence", "SentenceEnd", "cgd_generate", "search",
           "sentence_sampler", "terminal_token_ids"]
