"""Loading a model and its processor from a local folder, and turning images and prompts into inputs.

Nothing is downloaded: paths must be local folders, as `save_pretrained` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import transformers
from PIL import Image

from ..utils.errors import UserError
from ..utils.progress import library_bars
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
    """A vision-language model from a local folder, in eval mode; `dtype` one of DTYPES or a torch dtype."""
    if not isinstance(dtype, torch.dtype) and dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    folder = local_folder(path)
    config = read_config(folder)
    if not any(f.suffix in WEIGHT_SUFFIXES for f in folder.iterdir()):
        raise UserError(f"{folder} has a config.json but no weights (*.safetensors or *.bin): copy the whole "
                        "checkpoint folder.")
    native = _native_layout(config)
    with library_bars():  # no "Loading weights" bar in a log
        if native is not None:  # loaded into transformers' own classes, whatever trust_remote_code says
            return native.load_model(folder, config, dtype=dtype, device_map=device_map, **kwargs).eval()
        model = transformers.AutoModelForImageTextToText.from_pretrained(
            folder, dtype=dtype, device_map=device_map, trust_remote_code=trust_remote_code, **kwargs)
    return model.eval()


def _native_layout(config: dict):
    """The module that loads this remote-code layout into native transformers classes, if we have one."""
    from . import kimi_vl

    return {kimi_vl.MODEL_TYPE: kimi_vl}.get(config.get("model_type"))


def load_processor(path: str | Path, trust_remote_code: bool = False):
    """The model's processor. Without torchvision, transformers 5.x cannot build the video processor that
    Qwen-VL-style processors ask for (transformers issue #48558), so we build the processor for images only."""
    folder = local_folder(path)
    config = read_config(folder) if (folder / "config.json").is_file() else {}  # a damaged one is named here
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{folder} holds no tokenizer ({', '.join(TOKENIZER_FILES)}): copy the whole checkpoint "
                        "folder, processor files included.")
    native = _native_layout(config)
    if native is not None:
        return native.load_processor(folder, trust_remote_code=trust_remote_code)
    try:
        return transformers.AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except ImportError as err:
        if "orchvision" not in str(err):
            raise
    except ValueError as err:  # a tokenizer saved by transformers 5, read by 4.x
        if not is_unnamed_tokenizer(err):
            raise
    return _image_only_processor(folder)


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
    texts = []
    for row, prompt in enumerate(prompts):
        messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
        content = ([] if images is None else [{"type": "image"}]) + [{"type": "text", "text": prompt}]
        messages.append({"role": "user", "content": content})
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True)
                     + (replies[row] if replies is not None else ""))
    if images is None:
        return dict(processor(text=texts, return_tensors="pt", padding=True, padding_side="left"))
    nested = [[image] for image in images]  # one list per prompt: the layout every processor accepts
    return dict(processor(images=nested, text=texts, return_tensors="pt", padding=True, padding_side="left"))


def to_model_device(inputs: dict, model) -> dict:
    """Processor inputs on the device of the model's first weights, where its embeddings read them."""
    device, dtype = model.device, model.dtype
    # Floating inputs (pixels) in the model's dtype too: most models cast them, the native Kimi classes do not.
    return {key: value.to(device, dtype=dtype if value.is_floating_point() else None) if isinstance(value, torch.Tensor)
            else value.to(device) if hasattr(value, "to") else value for key, value in inputs.items()}


def read_prompts(path: str | Path) -> list[dict]:
    """Rows of a JSONL file with `image` (a path, relative to the file) and `prompt` (or `question`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist: give a JSONL file with one {{'image', 'prompt'}} per line.")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            image = (path.parent / row["image"]).resolve()
            prompt = row.get("prompt", row.get("question"))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"{path}:{number}: expected a JSON object with 'image' and 'prompt' ({err}).") from err
        if not isinstance(prompt, str) or not image.is_file():
            raise UserError(f"{path}:{number}: " + ("no 'prompt' text" if not isinstance(prompt, str)
                                                     else f"image {image} does not exist"))
        try:
            with Image.open(image) as opened:
                opened.verify()
        except (OSError, SyntaxError) as err:
            raise UserError(f"{path}:{number}: {image} is not a readable image ({err}).") from err
        rows.append({"image": image, "prompt": prompt})
    if not rows:
        raise UserError(f"{path} holds no rows: one JSON object with 'image' and 'prompt' per line.")
    return rows


def prompt_batches(processor, images: Sequence, prompts: Sequence[str], batch_size: int):
    """`prompt_inputs` for (image, prompt) pairs, `batch_size` at a time; an image may be a PIL image or a
    path, opened only when its batch comes."""
    for first in range(0, len(prompts), batch_size):
        chunk = [image if isinstance(image, Image.Image) else Image.open(image).convert("RGB")
                 for image in images[first:first + batch_size]]
        yield prompt_inputs(processor, chunk, prompts[first:first + batch_size])
