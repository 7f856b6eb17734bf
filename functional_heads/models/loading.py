"""Loading a model and its processor from a local folder, and turning images and prompts into inputs.

Nothing is downloaded: paths must be local folders, as `save_pretrained` writes them.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Sequence

import torch
import transformers
from PIL import Image
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from ..utils.errors import UnusableImage, UserError
from ..utils.files import text_lines
from ..utils.images import read_image
from ..utils.imports import requires
from ..utils.progress import library_bars
from .architectures import ARCHITECTURES, locate
from .compat import is_unnamed_tokenizer
from .dtypes import DTYPES


def local_folder(path: str | Path) -> Path:
    folder = Path(path)
    if not (folder / "config.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        raise UserError(f"{path} is not a local model folder (no config.json). functional-heads never downloads: "
                        "pass the folder a checkpoint was saved or downloaded to.")
    return folder


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "tiktoken.model")


def read_config(path: str | Path) -> dict:
    """The folder's config.json as a dict; a damaged file is named in the error."""
    file = local_folder(path) / "config.json"
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{file} is not a readable config.json ({err}); restore it from the checkpoint.") from err


def load_model(path: str | Path, dtype: str | torch.dtype = "auto", device_map: str | dict | None = None,
               trust_remote_code: bool = False, **kwargs):
    """A vision-language model from a local folder, in eval mode; `dtype` one of DTYPES or a torch dtype.
    Refused, in one line naming the cause: a text-only model, a device this torch cannot use, a truncated or
    damaged weight file, weights the checkpoint lacks (they would be random) and non-finite weights."""
    if not isinstance(dtype, torch.dtype) and dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    folder = local_folder(path)
    config = read_config(folder)
    if not any(f.suffix in WEIGHT_SUFFIXES for f in folder.iterdir()):
        raise UserError(f"{folder} has a config.json but no weights (*.safetensors or *.bin): copy the whole "
                        "checkpoint folder.")
    check_vision_language(folder, config)
    check_device_map(device_map)
    check_weight_files(folder)
    native = _native_layout(config)
    try:
        with library_bars():  # no "Loading weights" bar in a log
            if native is not None:  # loaded into transformers' own classes, whatever trust_remote_code says
                model = native.load_model(folder, config, dtype=dtype, device_map=device_map, **kwargs)
            else:
                model, info = transformers.AutoModelForImageTextToText.from_pretrained(
                    folder, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code,
                    output_loading_info=True, **kwargs)
                check_loaded_keys(folder, config, model, info)
    except RuntimeError as err:
        if "size mismatch" not in str(err) and "ignore_mismatched_sizes" not in str(err):
            raise
        raise UserError(f"{folder}: config.json gives weight shapes the checkpoint does not have (an edited hidden "
                        "size, vocabulary or head count?): restore config.json from the checkpoint.") from err
    check_finite_weights(folder, model)
    return model.eval()


# ---------------------------------------------------------------- what load_model refuses, and why

def check_vision_language(folder: Path, config: dict) -> None:
    """Refuse a model transformers knows but cannot load as image-text-to-text (a text-only language model, an
    image encoder): it has no image tokens to measure. Remote-code models are left to their own code."""
    model_type = config.get("model_type")
    if (model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or model_type in ARCHITECTURES
            or model_type not in CONFIG_MAPPING_NAMES or "AutoModelForImageTextToText" in config.get("auto_map", {})):
        return
    kind = "a text-only language model" if "vision_config" not in config else "not an image-to-text model"
    raise UserError(f"{folder} holds a '{model_type}' model, {kind}: functional-heads needs a vision-language model "
                    f"that answers about an image (layouts known: {', '.join(ARCHITECTURES)}; other "
                    "image-text-to-text models of transformers are tried with the generic one, see `fheads check`).")


_BUILT_IN_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # transformers' placement strategies
_STORAGE = ("cpu", "meta", "disk")  # always available


def check_device_map(device_map) -> None:
    """Refuse a device map naming a device this torch build or machine lacks (a CUDA device on a CPU-only
    torch, cuda:3 with two GPUs), before the long load, instead of torch's assertion halfway through it."""
    if device_map is None or device_map in _BUILT_IN_MAPS:
        return
    values = device_map.values() if isinstance(device_map, dict) else [device_map]
    for value in values:
        if value in _STORAGE:
            continue
        try:
            device = torch.device(value) if not isinstance(value, int) else _accelerator(value)
        except (RuntimeError, TypeError, ValueError) as err:
            raise UserError(f"--device-map {value!r} is not a device: give auto, balanced, sequential, cpu, cuda, "
                            "cuda:N or mps.") from err
        if device.type in _STORAGE:
            continue
        if device.type == "cuda" and torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise UserError(f"--device-map {value!r}: this torch ({torch.__version__}) was built without CUDA. "
                            "Install a CUDA build (https://pytorch.org/get-started/locally/), or use --device-map "
                            "cpu (or leave it unset).")
        backend = torch.backends.mps if device.type == "mps" else getattr(torch, device.type, None)
        if not (hasattr(backend, "is_available") and backend.is_available()):
            hint = " (check the driver and CUDA_VISIBLE_DEVICES)" if device.type == "cuda" else ""
            raise UserError(f"--device-map {value!r}: torch ({torch.__version__}) sees no {device.type} device here"
                            f"{hint}; use --device-map cpu, or leave it unset.")
        count = backend.device_count() if hasattr(backend, "device_count") else 1  # mps: one device
        if device.index is not None and device.index >= count:
            raise UserError(f"--device-map {value!r}: only {count} {device.type} device(s) are visible "
                            f"({device.type}:0 to {device.type}:{count - 1}).")


def _accelerator(index: int) -> torch.device:
    """The device an integer of a device map means: that index of the machine's accelerator (CUDA if none)."""
    accelerator = getattr(torch, "accelerator", None)
    current = accelerator.current_accelerator() if accelerator is not None else None
    return torch.device(current.type if current is not None else "cuda", index)


def check_weight_files(folder: Path) -> None:
    """The weight files transformers will read are whole: every shard an index names is there, each
    safetensors file as long as its header says, each zipped .bin readable. A truncated download otherwise
    fails deep in the loader, or not at all."""
    for index, single in (("model.safetensors.index.json", "model.safetensors"),
                          ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (folder / index).is_file():
            try:
                shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
                raise UserError(f"{folder / index} is not a readable weight index ({err}); restore it from the "
                                "checkpoint.") from err
            absent = [name for name in shards if not (folder / name).is_file()]
            if absent:
                raise UserError(f"{folder} lacks {len(absent)} of the {len(shards)} weight files its {index} "
                                f"names ({', '.join(absent[:3])}{', ...' if len(absent) > 3 else ''}): copy the "
                                "whole checkpoint folder.")
            files = [folder / name for name in shards]
        elif (folder / single).is_file():
            files = [folder / single]
        else:
            continue
        for file in files:
            problem = _safetensors_problem(file) if file.suffix == ".safetensors" else _zip_problem(file)
            if problem:
                raise UserError(f"{file} is truncated or damaged ({problem}): download or export it again.")
        return  # transformers reads safetensors when there are any, else the .bin files


def _safetensors_problem(file: Path) -> str | None:
    """What is wrong with a safetensors file's layout (from its header alone; no tensor is read), or None."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{size} bytes, not even a header"
        length = int.from_bytes(head, "little")
        if 8 + length > size:
            return f"its header claims {length} bytes, the file has {size}"
        try:
            header = json.loads(f.read(length))
            end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"),
                      default=0)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, IndexError, AttributeError) as err:
            return f"its header is not valid safetensors JSON: {err}"
    if 8 + length + end > size:
        return f"{size} bytes where its header describes {8 + length + end}"
    return None


def _zip_problem(file: Path) -> str | None:
    """torch.save writes a zip (the legacy pickle format is not checked): a cut-off one lacks its directory."""
    with open(file, "rb") as f:
        if f.read(2) != b"PK":
            return None
    try:
        with zipfile.ZipFile(file):
            return None
    except (zipfile.BadZipFile, OSError) as err:
        return f"not a readable torch zip: {err}"


def check_loaded_keys(folder: Path, config: dict, model, info: dict) -> None:
    """Refuse weights the checkpoint lacks: transformers initialises them at random and the model answers
    nonsense. Left out by transformers already: tied weights (lm_head tied to the input embeddings) and keys a
    model declares optional. Missing buffers are fine: they are computed at construction (rotary
    frequencies, position ids). Weights re-initialised for a shape mismatch are refused alike."""
    buffers = {name for name, _ in model.named_buffers()}
    missing = sorted(key for key in info.get("missing_keys") or [] if key not in buffers)
    mismatched = sorted(str(entry[0] if isinstance(entry, (tuple, list)) else entry)
                        for entry in info.get("mismatched_keys") or [])
    lacking = missing + mismatched
    if not lacking:
        return
    text = config.get("text_config") or {}
    untied = config.get("tie_word_embeddings", text.get("tie_word_embeddings")) is False
    if untied and any(key.endswith("lm_head.weight") for key in missing):
        cause = ("config.json unties the output head (tie_word_embeddings false) but the checkpoint has no "
                 "lm_head.weight: set tie_word_embeddings back to true")
    else:
        cause = "config.json does not match the checkpoint (edited, or from another model): restore it"
    raise UserError(f"{folder}: the checkpoint lacks {len(lacking)} weight(s) the model needs "
                    f"({', '.join(lacking[:3])}{', ...' if len(lacking) > 3 else ''}); they would be random. "
                    f"{cause}.")


def check_finite_weights(folder: Path, model) -> None:
    """Refuse a model with NaN or infinite weights (they make every answer empty). Each tensor is summed in its
    own dtype, on its own device, one transfer per device: a sum is finite unless a value is not (or, in
    float16, the sum overflows: such tensors are then checked value by value)."""
    tensors = [(name, t) for name, t in chain(model.named_parameters(), model.named_buffers())
               if t.is_floating_point() and t.device.type != "meta"]
    by_device: dict[torch.device, list] = {}
    for name, tensor in tensors:
        by_device.setdefault(tensor.device, []).append((name, tensor))
    suspects = []
    with torch.no_grad():
        for group in by_device.values():
            sums = torch.stack([tensor.sum().float() for _, tensor in group]).isfinite().cpu()
            suspects += [(name, tensor) for (name, tensor), ok in zip(group, sums.tolist()) if not ok]
        bad = [name for name, tensor in suspects if not torch.isfinite(tensor).all()]
    if bad:
        raise UserError(f"{folder}: {len(bad)} weight tensor(s) hold NaN or infinite values "
                        f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): the checkpoint is damaged; "
                        "download or export it again.")


def _native_layout(config: dict):
    """The module that loads this remote-code layout into native transformers classes, if we have one."""
    from . import kimi_vl

    return {kimi_vl.MODEL_TYPE: kimi_vl}.get(config.get("model_type"))


def load_processor(path: str | Path, trust_remote_code: bool = False):
    """The model's processor. Without torchvision, transformers 5.x cannot build the video processor that
    Qwen-VL-style processors ask for (transformers issue #48558), so we build the processor for images only."""
    folder = local_folder(path)
    config = read_config(folder) if (folder / "config.json").is_file() else {}  # a damaged one is named here
    check_vision_language(folder, config)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{folder} holds no tokenizer ({', '.join(TOKENIZER_FILES)}): copy the whole checkpoint "
                        "folder, processor files included.")
    if (folder / "tokenizer.model").is_file() and not (folder / "tokenizer.json").is_file():
        requires(f"The tokenizer of {folder} (a SentencePiece tokenizer.model)", "sentencepiece", "google.protobuf")
    native = _native_layout(config)
    if native is not None:
        return native.load_processor(folder, trust_remote_code=trust_remote_code)
    if not _has_image_processor(folder):
        raise UserError(f"{folder} has no preprocessor_config.json (the image processor's settings): copy it, with "
                        "the other processor files (processor_config.json, chat_template.jinja, the tokenizer's), "
                        "from the original checkpoint.")
    try:
        return transformers.AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except ImportError as err:
        if "orchvision" not in str(err):
            raise
    except ValueError as err:  # a tokenizer saved by transformers 5, read by 4.x
        if not is_unnamed_tokenizer(err):
            raise
    return _image_only_processor(folder)


def _has_image_processor(folder: Path) -> bool:
    """Whether the folder holds the image processor's settings: in preprocessor_config.json, or inside
    processor_config.json (where transformers 5 may write them)."""
    if (folder / "preprocessor_config.json").is_file():
        return True
    try:
        return "image_processor" in json.loads((folder / "processor_config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, TypeError):
        return False


def _image_only_processor(folder: Path):
    name = None
    for config in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        if (folder / config).is_file():
            name = name or json.loads((folder / config).read_text()).get("processor_class")
    cls = getattr(transformers, name or "", None)
    if cls is None:
        raise UserError(f"Cannot tell the processor class of {folder} (processor_class={name}).")

    class ImageOnlyProcessor(cls):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    ImageOnlyProcessor.__name__ = cls.__name__
    template = folder / "chat_template.jinja"
    return ImageOnlyProcessor(image_processor=transformers.AutoImageProcessor.from_pretrained(folder),
                              tokenizer=_tokenizer(folder, cls), video_processor=None,
                              chat_template=template.read_text() if template.is_file() else None)


def _tokenizer(folder: Path, processor_class):
    """The folder's tokenizer. transformers 4.x cannot name the class that 5.x writes for a tokenizer.json;
    it reads the same file through the fast class the processor expects."""
    try:
        return transformers.AutoTokenizer.from_pretrained(folder)
    except ValueError as err:
        if not is_unnamed_tokenizer(err):
            raise
    names = processor_class.tokenizer_class
    fast = [n for n in (names if isinstance(names, (tuple, list)) else [names]) if n and n.endswith("Fast")]
    if not fast:
        raise UserError(f"{folder}: its tokenizer was saved by transformers 5; upgrade transformers to read it.")
    return getattr(transformers, fast[0]).from_pretrained(folder)


def prompt_inputs(processor, images: Sequence[Image.Image] | None, prompts: Sequence[str],
                  system: str | None = None, replies: Sequence[str] | None = None) -> dict:
    """Processor inputs for one image and one user prompt per row, through the model's chat template,
    left-padded so that batched generation continues every row from its last token. images=None gives the
    same prompts without their image; `replies` puts that text at the start of each assistant turn (to score
    a forced continuation)."""
    texts = prompt_texts(processor, prompts, images is not None, system, replies)
    if images is None:
        return dict(processor(text=texts, return_tensors="pt", padding=True, padding_side="left"))
    nested = [[image] for image in images]  # one list per prompt: the layout every processor accepts
    return dict(processor(images=nested, text=texts, return_tensors="pt", padding=True, padding_side="left"))


def prompt_texts(processor, prompts: Sequence[str], with_image: bool, system: str | None = None,
                 replies: Sequence[str] | None = None) -> list[str]:
    """The text of each prompt through the model's chat template, an image placeholder first if `with_image`:
    what `prompt_inputs` tokenizes, and what another engine (vLLM) is given beside the image."""
    texts = []
    for row, prompt in enumerate(prompts):
        messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": prompt}]
        messages.append({"role": "user", "content": content})
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True)
                     + (replies[row] if replies is not None else ""))
    return texts


def context_length(model) -> int | None:
    """The longest sequence the model was made for: its text config's max_position_embeddings (None if unset)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


class PromptTooLong(UserError):
    """Prompts (rows of one batch) longer than the model's context: positions it was never trained on."""

    def __init__(self, rows: list[int], lengths: list[int], context: int):
        self.rows, self.lengths, self.context = rows, lengths, context
        super().__init__(f"prompt(s) {rows} of the batch hold {lengths} tokens, more than the model's context of "
                         f"{context} (max_position_embeddings): shorten them or use a model with a longer context.")


def check_context(model, inputs: dict, rows: Sequence[int] | None = None) -> None:
    """Raise `PromptTooLong` for the prompts of processor `inputs` (image tokens counted) longer than the model's
    context; `rows` numbers them in the caller's batch (default: 0, 1, ...)."""
    context = context_length(model)
    ids = inputs["input_ids"]
    if context is None or ids.shape[1] <= context:  # the padded width bounds every prompt: nothing to count
        return
    mask = inputs.get("attention_mask")
    lengths = mask.sum(-1).tolist() if mask is not None else [ids.shape[1]] * ids.shape[0]
    rows = list(range(ids.shape[0])) if rows is None else list(rows)
    long = [(row, length) for row, length in zip(rows, lengths) if length > context]
    if long:
        raise PromptTooLong([row for row, _ in long], [length for _, length in long], context)


def check_image_input(processor, image: Image.Image, prompt: str) -> None:
    """Raise `UnusableImage` if the model's processor refuses this image with this prompt on its own (an aspect
    ratio or a size outside its limits, a shape it cannot read), so that one such item is set aside instead of
    failing the batch it would be in. A missing package is not the image's fault: it is raised as it is."""
    try:
        prompt_inputs(processor, [image], [prompt])
    except ImportError:
        raise
    except (ValueError, TypeError, IndexError, OSError) as err:
        raise UnusableImage(f"the model's processor refuses it ({type(err).__name__}: {' '.join(str(err).split())})") \
            from None


def to_model_device(inputs: dict, model) -> dict:
    """Processor inputs on the device of the model's first weights, where its embeddings read them."""
    device, dtype = model.device, model.dtype
    # Floating inputs (pixels) in the model's dtype too: most models cast them, the native Kimi classes do not.
    return {key: value.to(device, dtype=dtype if value.is_floating_point() else None) if isinstance(value, torch.Tensor)
            else value.to(device) if hasattr(value, "to") else value for key, value in inputs.items()}


def read_prompts(path: str | Path) -> list[dict]:
    """Rows of a JSONL file with `image` (a path, relative to the file) and `prompt` (or `question`), each with
    `where` it is (file:line). A byte-order mark is accepted; a line that is not UTF-8, not a JSON object, or
    without an image path or prompt text is an error naming the file and line. The images are read later, each
    on its own (`core.heads.usable_calibration`), so that one bad image is skipped, not fatal."""
    path = Path(path)
    if path.is_dir():
        files = sorted(f.name for f in path.glob("*.jsonl"))
        raise UserError(f"{path} is a folder: give a JSONL file of {{'image', 'prompt'}} rows" +
                        (f", e.g. {path / files[0]} (it holds {', '.join(files)})." if files else "."))
    if not path.is_file():
        raise UserError(f"{path} does not exist: give a JSONL file with one {{'image', 'prompt'}} per line.")
    rows = []
    for number, line in text_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{where}: not valid JSON ({err.msg}); give one object with 'image' and 'prompt' per "
                            "line.") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: a JSON {type(row).__name__}, not an object with 'image' and 'prompt'.")
        image, prompt = row.get("image"), row.get("prompt", row.get("question"))
        if not isinstance(image, str) or not image:
            raise UserError(f"{where}: no 'image' path (a path relative to the file).")
        if not isinstance(prompt, str):
            raise UserError(f"{where}: no 'prompt' text.")
        rows.append({"image": (path.parent / image).resolve(), "prompt": prompt, "where": where})
    if not rows:
        raise UserError(f"{path} holds no rows: one JSON object with 'image' and 'prompt' per line.")
    return rows


def prompt_batches(processor, images: Sequence, prompts: Sequence[str], batch_size: int):
    """`prompt_inputs` for (image, prompt) pairs, `batch_size` at a time; an image may be a PIL image, a path
    or a function returning the image, read (`utils.images.read_image`) only when its batch comes."""
    for first in range(0, len(prompts), batch_size):
        chunk = [image() if callable(image) else read_image(image) for image in images[first:first + batch_size]]
        yield prompt_inputs(processor, chunk, prompts[first:first + batch_size])


# ---------------------------------------------------------------- checkpoint tensors, for engines that load by name

@dataclass(frozen=True)
class OutProjWeights:
    """Where a checkpoint keeps each attention layer's o_proj weight (the layer numbering of `locate`), with
    the head count and size that split its input columns: what an engine that loads checkpoint tensors by
    name (vLLM) needs to fold gains into them."""

    files: dict[str, Path]  # checkpoint key of each layer's o_proj weight -> the safetensors file holding it
    keys: list[str]  # per attention layer
    num_heads: int
    head_dim: int

    def read(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The original weights by key, in `dtype` (the engine's), as loading them would give."""
        from safetensors import safe_open

        tensors = {}
        for file in sorted(set(self.files.values())):
            with safe_open(str(file), framework="pt") as handle:
                tensors.update({key: handle.get_tensor(key).to(dtype) for key in self.keys if self.files[key] == file})
        return {key: tensors[key] for key in self.keys}


def out_proj_weights(path: str | Path) -> OutProjWeights:
    """The checkpoint keys of the decoder's o_proj weights. The layout comes from `locate` on the model built
    on the meta device (no weight is read); each module's name is matched with the checkpoint's keys by its
    part from the layer number on (`layers.3.self_attn.o_proj.weight`), since checkpoints written by other
    transformers versions name the decoder differently. Refused in one line when a layer has no such key or
    several (a quantized checkpoint keeps no plain weight)."""

    folder = local_folder(path)
    files = _safetensors_keys(folder)
    config = transformers.AutoConfig.from_pretrained(folder)
    with torch.device("meta"), library_bars():
        skeleton = transformers.AutoModelForImageTextToText.from_config(config)
    layout = locate(skeleton)
    names = {id(module): name for name, module in skeleton.named_modules()}
    keys = []
    for layer, proj in enumerate(layout.out_projs):
        name = f"{names[id(proj)]}.weight"
        parts = name.split(".")
        number = max(i for i, part in enumerate(parts) if part.isdigit()) if any(p.isdigit() for p in parts) else 0
        tail = ".".join(parts[max(0, number - 1):])
        found = [name] if name in files else [key for key in files if key == tail or key.endswith("." + tail)]
        if len(found) != 1:
            raise UserError(f"{folder}: cannot tell which checkpoint tensor is layer {layer}'s o_proj weight "
                            f"({len(found)} keys end with {tail}; a quantized checkpoint has none), so gains cannot "
                            "be folded into it: use --engine hf.")
        keys.append(found[0])
    return OutProjWeights({key: files[key] for key in keys}, keys, layout.num_heads, layout.head_dim)


def _safetensors_keys(folder: Path) -> dict[str, Path]:
    """Every tensor key of the folder's safetensors files -> its file (read from the headers)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(f"{folder} holds no *.safetensors weights: gains can be folded into those only "
                        "(convert the checkpoint, or use --engine hf).")
    keys = {}
    for file in files:
        with open(file, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        keys.update({key: file for key in header if key != "__metadata__"})
    return keys


def checkpoint_dtype(path: str | Path) -> str:
    """The dtype `dtype="auto"` loads a folder in, as transformers picks it: the config's (`dtype`, or the older
    `torch_dtype`, at the top or in the text config), else the first floating weight's in the checkpoint."""
    folder = local_folder(path)
    config = read_config(folder)
    for where in (config, config.get("text_config") or {}):
        for name in ("dtype", "torch_dtype"):
            if isinstance(where.get(name), str) and where[name] in DTYPES[1:]:
                return where[name]
    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        for key, entry in header.items():
            if key != "__metadata__" and entry.get("dtype") in names:
                return names[entry["dtype"]]
    return "float32"
