"""lmms-eval model wrapper: run any functional-heads method inside lmms-eval (optional extra).

Registered through the `lmms_eval.models` entry point as `functional_heads`:

    lmms-eval --model functional_heads \
        --model_args pretrained=/models/Ocean-R1-7B,method=static,heads=heads.json --tasks mmstar

model_args: pretrained (a local folder), method (as in `fheads eval`, registered methods included), heads, preset,
batch_size (requests answered together, as `fheads eval --batch-size`), dtype, device_map; any other key is a
decoding baseline's setting, as `--method-option` takes them (e.g. method=agla,itm=/models/blip-itm-large-coco
or method=vcd,alpha=0.5). Answers come from the engine of `fheads eval` (`evaluation.engine`) with its
decoding settings: greedy unless the task asks for a temperature above 0 (then sampled, seeded per batch),
at most the task's max_new_tokens (default `DEFAULT_MAX_NEW_TOKENS`). Only `generate_until` is supported (the
paper's benchmarks are all generative); log-likelihood tasks raise a clear error.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..core.config import RescaleConfig
from ..core.heads import HeadMap
from ..evaluation.engine import DEFAULT_MAX_NEW_TOKENS, Decoding, HFBackend
from ..evaluation.methods import get_method
from ..models.loading import PromptTooLong
from ..utils.errors import FunctionalHeadsWarning, MissingDependency, UserError
from ..utils.images import to_rgb
from ..utils.imports import install_hint

try:
    from lmms_eval.api.model import lmms
except ImportError as err:
    raise MissingDependency(f"{__name__} needs lmms_eval: {install_hint('lmms_eval')}.") from err


def manifests():
    """The entry point's payload: called by lmms-eval's registry when it loads plugins."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id="functional_heads",
                          simple_class_path="functional_heads.integrations.lmms_eval.FunctionalHeads")]


def task_decoding(gen_kwargs: dict) -> Decoding:
    """The engine's decoding settings for a task's generation arguments."""
    temperature = float(gen_kwargs.get("temperature", 0) or 0)
    return Decoding(max_new_tokens=int(gen_kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
                    sample=temperature > 0, temperature=temperature if temperature > 0 else 1.0)


class FunctionalHeads(lmms):
    is_simple = True

    def __init__(self, pretrained: str, method: str = "vanilla", heads: str | None = None, preset: str | None = None,
                 batch_size: int | str = 1, dtype: str = "auto", device_map: str | None = None, **kwargs):
        super().__init__()
        self.method = get_method(method, {k: str(v) for k, v in kwargs.items()},
                                 heads=HeadMap.load(heads) if heads else None,
                                 config=RescaleConfig.preset(preset) if preset else None)
        self.backend = HFBackend.load(Path(pretrained), dtype=dtype, device_map=device_map)
        self.batch_size = int(batch_size)

    def generate_until(self, requests) -> list[str]:
        """Answers in the requests' order; consecutive requests with the same generation arguments are
        answered `batch_size` at a time."""
        answers: list[str] = []
        batch: list = []
        for request in requests:
            if batch and (len(batch) == self.batch_size or request.args[1] != batch[0].args[1]):
                answers += self._answered(batch)
                batch = []
            batch.append(request)
        if batch:
            answers += self._answered(batch)
        return answers

    def _answered(self, requests: list) -> list[str]:
        """One batch of requests sharing their generation arguments, cut at the task's stop strings."""
        contexts, images = [], []
        for request in requests:
            context, _, doc_to_visual, doc_id, task, split = request.args
            visuals = [v for v in doc_to_visual(self.task_dict[task][split][doc_id]) if v is not None]
            if len(visuals) != 1:
                raise UserError(f"{task}: functional_heads answers one image per question, got {len(visuals)}.")
            contexts.append(context)
            images.append(to_rgb(visuals[0]))  # any mode, scaled to 8 bits
        gen_kwargs = requests[0].args[1]
        _, _, _, doc_id, task, split = requests[0].args
        decoding = task_decoding(gen_kwargs).for_batch(f"{task}/{split}/{doc_id}")
        texts = []
        for context, text in zip(contexts, self._answers(contexts, images, decoding)):
            for stop in gen_kwargs.get("until", []) or []:
                if stop and stop in text:
                    text = text.split(stop)[0]
            texts.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return texts

    def _answers(self, contexts: list[str], images: list, decoding) -> list[str]:
        """The backend's answers. A prompt longer than the model's context is not answered (positions it was
        never trained on): lmms-eval needs one answer per request, so it gets an empty one, with a warning,
        and the rest of the batch is answered."""
        try:
            return [answer.text for answer in self.backend.answer(contexts, images, self.method, decoding)]
        except PromptTooLong as err:
            warnings.warn(f"{len(err.rows)} prompt(s) longer than the model's context ({err.context} tokens) get an "
                          "empty answer.", FunctionalHeadsWarning, stacklevel=2)
            rest = [i for i in range(len(contexts)) if i not in err.rows]
            answered = self._answers([contexts[i] for i in rest], [images[i] for i in rest], decoding) if rest else []
            by_row = dict(zip(rest, answered))
            return [by_row.get(i, "") for i in range(len(contexts))]

    def loglikelihood(self, requests):
        raise NotImplementedError("functional_heads supports generative tasks (generate_until) only.")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("functional_heads does not support multi-round tasks.")
