"""Evaluate and report from Python, with the same run folders as `fheads eval` and `fheads report`.

    from functional_heads.evaluation import evaluate, report
    run = evaluate("models/Ocean-R1-7B", "mathvista", "static", data="data/MathVista", heads="heads.json")
    result = report("runs", out="report")

Every request is checked before the model loads (benchmark, data and the extras reading it needs, every row
read once, method, head map against the model's config, output folder), so a bad one fails in seconds and
leaves nothing behind.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from ..core.config import RescaleConfig
from ..core.heads import HeadMap, check_not_folded, warn_if_inert
from ..models.loading import read_config
from ..utils.errors import UserError
from ..utils.files import check_writable
from .answering import answer_into_run
from .benchmarks import get_benchmark
from .distributed import Shard, device_map_for
from .engine import Decoding, HFBackend, check_engine, check_order
from .methods import get_method
from .runs import Run, open_run
from .vllm_engine import VLLMBackend, VLLMOptions, require_vllm


def evaluate(model: str | Path, bench: str, method: str = "vanilla", *, out: str | Path = "runs",
             data: str | Path | None = None, split: str | None = None, options: dict[str, str] | None = None,
             heads: HeadMap | str | Path | None = None, preset: str | None = None,
             method_options: dict[str, str] | None = None, limit: int | None = None, batch_size: int = 8,
             decoding: Decoding = Decoding(), judge=None, dtype: str = "auto", device_map: str | None = None,
             progress: bool = True, order: str = "length", shard: Shard | None = None,
             gpus_per_process: int | None = None, allow_folded: bool = False, engine: str = "hf",
             vllm_options: dict[str, str] | VLLMOptions | None = None) -> Run:
    """Run `method` on benchmark `bench` into its run folder under `out` (resumable: call again to
    continue), and return the run. `fheads eval` is this function behind option parsing.

    Under a launcher (torchrun, accelerate launch: RANK / WORLD_SIZE / LOCAL_RANK, or `shard`), this process
    answers its share of the items on its own device (`distributed.device_map_for`); the run folder is the
    same for every world size. `order="length"` batches prompts of similar length together. A rescaling
    method on a folder `export_folded` wrote is refused unless `allow_folded` (the gains would compound);
    one whose settings change nothing is warned about (`FunctionalHeadsWarning`).

    `engine="vllm"` answers on a vLLM engine (`vllm_engine.VLLMBackend`, with `vllm_options`, its own settings)
    for the methods that fold into the weights; its runs are apart from transformers' ("hf")."""
    benchmark = get_benchmark(bench, **(options or {}))
    if data is None and benchmark.needs_data:
        raise UserError(f"{bench} needs --data: a local copy of the dataset (see the README).")
    if data is not None and not Path(data).exists():
        raise UserError(f"Data path {data} does not exist.")
    head_map = heads if isinstance(heads, HeadMap) or heads is None else HeadMap.load(heads)
    chosen = get_method(method, method_options, heads=head_map,
                        config=RescaleConfig.preset(preset) if preset else None)
    read_config(model)  # the folder is a model folder with a readable config
    if head_map is not None:
        head_map.check_fits_config(model)
    if chosen.rescales:
        check_not_folded(model, allow_folded, f"rescaling it with method {chosen.name}")
    warn_if_inert(chosen.inert_warning())
    check_writable(out)
    check_order(order)
    check_engine(engine)
    if engine != "vllm" and vllm_options:
        raise UserError("--vllm-option is for --engine vllm.")
    # every row read once before the model loads: a missing extra (pyarrow, datasets), unreadable data and
    # duplicate ids fail here, in a second, instead of after the load
    if sum(1 for _ in islice(benchmark.examples(data, split), limit)) == 0:
        raise UserError(f"{bench}: the data holds no items (check --data and --split).")
    shard = shard or Shard.from_environment()
    if engine == "vllm":
        options = vllm_engine_options(chosen, vllm_options, device_map, gpus_per_process, shard)
        run = open_run(out, model, benchmark, chosen, data, split, dtype, decoding, judge, VLLMBackend.name, shard)
        backend = VLLMBackend.load(model, dtype=dtype, options=options)
    else:
        device_map, max_memory = device_map_for(shard, device_map, gpus_per_process)
        run = open_run(out, model, benchmark, chosen, data, split, dtype, decoding, judge, HFBackend.name, shard)
        backend = HFBackend.load(model, dtype=dtype, device_map=device_map,
                                 **({"max_memory": max_memory} if max_memory else {}))
    return answer_into_run(run, backend, benchmark, lambda: benchmark.examples(data, split), chosen, decoding,
                           batch_size, limit, judge, progress, order)


def vllm_engine_options(method, options, device_map, gpus_per_process, shard: Shard) -> VLLMOptions:
    """The vLLM options of a request, checked with what else it asks before anything loads: vLLM installed,
    a method that folds into the weights, no transformers placement, one process."""
    require_vllm()
    method.static_gains()  # NotFoldable: one line, before the engine starts
    if device_map is not None or gpus_per_process is not None:
        raise UserError("--device-map and --gpus-per-process place transformers' model; vLLM places its own: use "
                        "--vllm-option tensor_parallel_size=N.")
    if shard.world_size > 1:
        raise UserError("--engine vllm runs as one process (vLLM spreads over GPUs itself: --vllm-option "
                        "tensor_parallel_size=N); launch it without torchrun or accelerate launch.")
    return options if isinstance(options, VLLMOptions) else VLLMOptions.parse(options)


def report(runs: str | Path = "runs", out: str | Path | None = None, common_items: bool = False) -> dict:
    """Every benchmark's methods side by side from the run folders under `runs` (see `report.build_report`);
    with `out`, also writes report.md, report.json and report.png there."""
    from .report import build_report, write_report

    result = build_report(runs, common_items=common_items)
    if out is not None:
        write_report(result, Path(out))
    return result
