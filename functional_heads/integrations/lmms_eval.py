"""lmms-eval model wrapper: run any functional-heads method inside lmms-eval (optional extra).

Registered through the `lmms_eval.models` entry point as `functional_heads`:

    lmms-eval --model functional_heads \
        --model_args pretrained=/models/Ocean-R1-7B,method=static,heads=heads.json --tasks mmstar

model_args: pretrained (a local folder), method (as in `fheads eval`, registered methods included), heads, preset, batch_size, dtype,
device_map; any other key is a decoding baseline's setting, as `--method-option` takes them (e.g.
method=agla,itm=/models/blip-itm-large-coco or method=vcd,alpha=0.5). Greedy unless the task asks for a temperature above 0. Only `generate_until` is supported
(the paper's benchmarks are all generative); log-likelihood tasks raise a clear error.
"""

from __future__ import annotations

from pathlib import Path

from lmms_eval.api.model import lmms

from ..core.config import RescaleConfig
from ..core.heads import HeadMap
from ..evaluation.methods import get_method
from ..models.loading import load_model, load_processor


def manifests():
    """The entry point's payload: called by lmms-eval's registry when it loads plugins."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id="functional_heads",
                          simple_class_path="functional_heads.integrations.lmms_eval.FunctionalHeads")]


class FunctionalHeads(lmms):
    is_simple = True

    def __init__(self, pretrained: str, method: str = "vanilla", heads: str | None = None, preset: str | None = None,
                 batch_size: int | str = 1, dtype: str = "auto", device_map: str | None = None, **kwargs):
        super().__init__()
        self.method = get_method(method, {k: str(v) for k, v in kwargs.items()},
                                 heads=HeadMap.load(heads) if heads else None,
                                 config=RescaleConfig.preset(preset) if preset else None)
        self.processor = load_processor(Path(pretrained))
        self.model = load_model(Path(pretrained), dtype=dtype, device_map=device_map)
        self.batch_size = int(batch_size)

    def generate_until(self, requests) -> list[str]:
        answers = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            visuals = [v for v in doc_to_visual(self.task_dict[task][split][doc_id]) if v is not None]
            if len(visuals) != 1:
                raise ValueError(f"{task}: functional_heads answers one image per question, got {len(visuals)}.")
            temperature = float(gen_kwargs.get("temperature", 0) or 0)
            generation = {"max_new_tokens": int(gen_kwargs.get("max_new_tokens", 1024)), "do_sample": temperature > 0}
            if temperature > 0:
                generation["temperature"] = temperature
            out = self.method.generate(self.model, self.processor, [visuals[0].convert("RGB")], [context],
                                       **generation)
            text = self.processor.batch_decode(out.tokens[:, out.prompt_length:], skip_special_tokens=True)[0]
            for stop in gen_kwargs.get("until", []) or []:
                if stop and stop in text:
                    text = text.split(stop)[0]
            answers.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError("functional_heads supports generative tasks (generate_until) only.")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("functional_heads does not support multi-round tasks.")
