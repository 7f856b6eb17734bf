"""`fheads`: calibrate a head map, inspect it, export a folded model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Functional head identification and class-conditioned rescaling (arXiv 2510.10285).")
console = Console()

_WEIGHT_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(2)


def _config(preset, perc_last_layer, reas_first_layer, tau_perc, tau_reas, g_perc, g_reas, settings=None):
    from .config import RescaleConfig

    overrides = {k: v for k, v in dict(perc_last_layer=perc_last_layer, reas_first_layer=reas_first_layer,
                                       tau_perc=tau_perc, tau_reas=tau_reas, g_perc=g_perc,
                                       g_reas=g_reas).items() if v is not None}
    if preset and settings:
        raise ValueError("Give --preset or --settings, not both.")
    if preset:
        return RescaleConfig.preset(preset, **overrides)
    if settings:
        try:
            data = json.loads(Path(settings).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"Cannot read settings from {settings}: {err}") from None
        try:
            return RescaleConfig.from_dict({**data.get("config", data), **overrides})
        except TypeError as err:
            raise ValueError(f"{settings} is not a RescaleConfig: {err}") from None
    missing = {"perc_last_layer", "reas_first_layer", "tau_perc", "tau_reas"} - overrides.keys()
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in sorted(missing))
        raise ValueError(f"Give --preset, --settings or all of: {flags}.")
    return RescaleConfig(**overrides)


@app.command()
def calibrate(model: Path = typer.Option(..., help="Local model folder."),
              data: Path = typer.Option(..., help="JSONL with 'image' (path relative to the file) and 'prompt'."),
              out: Path = typer.Option(Path("heads.json"), help="Where to write the head map."),
              preset: Optional[str] = typer.Option(None, help="Named settings, e.g. ocean-r1; flags below override."),
              settings: Optional[Path] = typer.Option(None, help="Settings JSON (a RescaleConfig, or a settings.json "
                                                                 "with a 'config' entry); flags below override."),
              perc_last_layer: Optional[int] = None, reas_first_layer: Optional[int] = None,
              tau_perc: Optional[float] = None, tau_reas: Optional[float] = None,
              g_perc: Optional[float] = None, g_reas: Optional[float] = None,
              batch_size: int = typer.Option(4, min=1), limit: Optional[int] = typer.Option(None, min=1),
              dtype: str = typer.Option("auto", help="auto, float32, bfloat16 or float16."),
              device_map: Optional[str] = typer.Option(None, help="e.g. auto or cuda:0.")):
    """Measure S_v on calibration prompts and write the static head map (mean S_v over the prompts)."""
    from .heads import calibrate as calibrate_heads
    from .loading import load_model, load_processor, prompt_batches, read_prompts

    try:
        cfg = _config(preset, perc_last_layer, reas_first_layer, tau_perc, tau_reas, g_perc, g_reas, settings)
        rows = read_prompts(data)[:limit]
        processor = load_processor(model)
        vlm = load_model(model, dtype=dtype, device_map=device_map)
        heads = calibrate_heads(vlm, _to_device(prompt_batches(processor, [r["image"] for r in rows], [r["prompt"] for r in rows], batch_size), vlm), cfg,
                                progress=True, total=-(-len(rows) // batch_size))
    except ValueError as err:
        _fail(str(err))
    heads.save(out)
    console.print(f"wrote {out}: {int(heads.perception.sum())} perception and {int(heads.reasoning.sum())} reasoning "
                  f"heads ({heads.share_selected:.1%} of {heads.num_layers * heads.num_heads}) from {heads.num_samples} "
                  "prompts")


def _to_device(batches, model):
    device = next(model.parameters()).device
    for batch in batches:
        yield {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


@app.command()
def inspect(heads: Path = typer.Argument(..., help="A head map written by `fheads calibrate`.")):
    """Print a head map: heads per layer, mean S_v per layer, share of heads selected."""
    from .heads import HeadMap

    try:
        head_map = HeadMap.load(heads)
    except ValueError as err:
        _fail(str(err))
    cfg = head_map.config
    table = Table(title=f"{heads} ({head_map.model_type or 'unknown model'}, {head_map.num_layers} layers x "
                        f"{head_map.num_heads} heads, layers from 0)")
    for column in ("layer", "perception", "reasoning", "mean S_v", "perception heads", "reasoning heads"):
        table.add_column(column, justify="right" if column in ("layer", "perception", "reasoning", "mean S_v") else "left")
    for layer, (n_perc, n_reas) in enumerate(head_map.per_layer_counts()):
        mean = "" if head_map.ratios is None else f"{head_map.ratios[layer].mean():.3f}"
        table.add_row(str(layer), str(n_perc), str(n_reas), mean,
                      " ".join(map(str, head_map.perception[layer].nonzero().flatten().tolist())),
                      " ".join(map(str, head_map.reasoning[layer].nonzero().flatten().tolist())))
    console.print(table)
    total = head_map.num_layers * head_map.num_heads
    console.print(f"perception: {int(head_map.perception.sum())} heads (layers <= {cfg.perc_last_layer}, "
                  f"S_v >= {cfg.tau_perc}, gain {cfg.g_perc}); reasoning: {int(head_map.reasoning.sum())} heads "
                  f"(layers >= {cfg.reas_first_layer}, S_v <= {cfg.tau_reas}, gain {cfg.g_reas}); selected "
                  f"{int((head_map.perception | head_map.reasoning).sum())}/{total} = {head_map.share_selected:.1%}",
                  soft_wrap=True)


@app.command()
def export(model: Path = typer.Option(..., help="Local model folder."),
           heads: Path = typer.Option(..., help="Head map from `fheads calibrate`."),
           out: Path = typer.Option(..., help="Folder for the folded model."),
           dtype: str = typer.Option("auto", help="auto, float32, bfloat16 or float16.")):
    """Fold the head map's gains into the o_proj weights and save a model that plain transformers loads."""
    from .heads import HeadMap
    from .loading import load_model
    from .rescale import fold

    try:
        head_map = HeadMap.load(heads)
        vlm = load_model(model, dtype=dtype)
        fold(vlm, head_map)
    except ValueError as err:
        _fail(str(err))
    vlm.save_pretrained(out)
    for file in Path(model).iterdir():  # processor, tokenizer and chat template travel unchanged
        if file.is_file() and file.name not in _WEIGHT_FILES and file.suffix not in (".safetensors", ".bin", ".pt"):
            shutil.copy2(file, out / file.name)
    shutil.copy2(heads, out / "functional_heads.json")
    console.print(f"wrote {out}: o_proj columns of {int((head_map.gains != 1).sum())} heads scaled; it loads with "
                  "plain transformers. The head map is kept as functional_heads.json.")


@app.command()
def demo(out: Optional[Path] = typer.Option(None, help="Write demo.md, demo.json and the figures here."),
         model: Optional[Path] = typer.Option(None, help="A shapes model folder with settings.json (default: bundled)."),
         limit: Optional[int] = typer.Option(None, min=8,
                                             help="Only the first N test items (at least one per family)."),
         batch_size: int = typer.Option(64, min=1)):
    """The method end to end on the bundled model and the shapes benchmark (about 3 minutes on 2 cores)."""
    from .demo import markdown, run_demo

    try:
        report = run_demo(out=out, model_path=model, limit=limit, batch_size=batch_size)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    console.print(markdown(report), soft_wrap=True)
    if out is not None:
        console.print(f"wrote {out}/demo.md, demo.json, heads.json, ratios_heatmap.png, ratios_by_layer.png")


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes KEY=VALUE, got '{value}'.")
        pairs[key] = val
    return pairs


@app.command("eval")
def evaluate(model: Path = typer.Option(..., help="Local model folder."),
             bench: str = typer.Option(..., help="mathvista, mathvision, hallusionbench, mmstar, seedbench, pope, "
                                                 "chair or shapes."),
             method: str = typer.Option("vanilla", help="vanilla, static, dynamic, perception-only, reasoning-only, "
                                                        "vcd, pai, agla or cgd."),
             out: Path = typer.Option(Path("runs"), help="Run folders go here (one per setting)."),
             data: Optional[Path] = typer.Option(None, help="Local copy: parquet file(s), a save_to_disk folder, "
                                                            "or JSONL with images (shapes: optional)."),
             split: Optional[str] = typer.Option(None, help="Split to read (default: the benchmark's usual one)."),
             heads: Optional[Path] = typer.Option(None, help="Head map from `fheads calibrate` (rescaling methods)."),
             preset: Optional[str] = typer.Option(None, help="Settings for dynamic without a head map."),
             option: list[str] = typer.Option([], help="Benchmark option KEY=VALUE, e.g. annotations=PATH (chair)."),
             method_option: list[str] = typer.Option([], help="Baseline setting KEY=VALUE, e.g. alpha=1.0; agla "
                                                                     "needs itm=PATH, cgd clip=PATH."),
             limit: Optional[int] = typer.Option(None, min=1, help="Only the first N items."),
             batch_size: int = typer.Option(8, min=1),
             max_new_tokens: int = typer.Option(1024, min=1),
             sample: bool = typer.Option(False, help="Sample instead of greedy decoding."),
             temperature: float = typer.Option(1.0, min=0.0), seed: int = typer.Option(0),
             judge_url: Optional[str] = typer.Option(None, help="OpenAI-compatible API base URL for LLM answer "
                                                                "extraction (off by default; key: OPENAI_API_KEY)."),
             judge_model: Optional[str] = typer.Option(None, help="The judge's model name."),
             dtype: str = typer.Option("auto", help="auto, float32, bfloat16 or float16."),
             device_map: Optional[str] = typer.Option(None, help="e.g. auto or cuda:0.")):
    """Run one method on one benchmark; resumable (rerun the same command to continue)."""
    from .evaluation.benchmarks import get_benchmark
    from .evaluation.judge import Judge
    from .evaluation.runs import Run, evaluate as run_items
    from .loading import load_model, load_processor

    try:
        benchmark = get_benchmark(bench, **_pairs(option, "--option"))
        if data is None and bench != "shapes":
            raise ValueError(f"{bench} needs --data: a local copy of the dataset (see the README).")
        chosen = _method(method, heads, preset, _pairs(method_option, "--method-option"))
        generation = {"max_new_tokens": max_new_tokens, "do_sample": sample}
        if sample:
            generation.update(temperature=temperature, seed=seed)
        settings = {"model": str(model.resolve()), "data": str(data.resolve()) if data else None,
                    "split": split or benchmark.default_split, "options": _pairs(option, "--option"),
                    "dtype": dtype, **chosen.settings(), "generation": generation}
        if (judge_url is None) != (judge_model is None):
            raise ValueError("An LLM judge needs both --judge-url and --judge-model.")
        judge = Judge(judge_url, judge_model) if judge_url else None
        settings["judge"] = {"url": judge_url, "model": judge_model} if judge else None
        run = Run.open(out, bench, method, settings)
        processor, vlm = load_processor(model), load_model(model, dtype=dtype, device_map=device_map)
        run_items(vlm, processor, benchmark, benchmark.examples(data, split), chosen, run, batch_size=batch_size,
                  limit=limit, judge=judge, **generation)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    summary = benchmark.metrics([r for r in run.records.values() if r.get("error") is None])
    unusable = sum(r.get("error") is not None for r in run.records.values())
    console.print(f"{run.folder}: {len(run.records)} items ({unusable} unusable); accuracy "
                  f"{summary.get('accuracy') or 0:.1%}")


def _method(name: str, heads: Optional[Path], preset: Optional[str], options: dict):
    from .config import RescaleConfig
    from .evaluation.methods import Method
    from .heads import HeadMap

    return Method.from_options(name, options, heads=HeadMap.load(heads) if heads else None,
                               config=RescaleConfig.preset(preset) if preset else None)


@app.command()
def report(runs: Path = typer.Argument(Path("runs"), help="Folder of run folders written by `fheads eval`."),
           out: Optional[Path] = typer.Option(None, help="Write report.md, report.json and report.png here."),
           common_items: bool = typer.Option(False, help="Compare on the items every run answered.")):
    """Compare the methods of each benchmark on the same items: metrics, intervals, paired tests, latency."""
    from .evaluation.report import build_report, markdown, plot

    try:
        result = build_report(runs, common_items=common_items)
    except ValueError as err:
        _fail(str(err))
    text = markdown(result)
    console.print(text, soft_wrap=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(text)
        (out / "report.json").write_text(json.dumps(result, indent=1, default=str))
        plot(result, out / "report.png")
        console.print(f"wrote {out}/report.md, report.json, report.png")


data_app = typer.Typer(help="Benchmark data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("shapes")
def data_shapes(out: Path = typer.Option(..., help="Folder for the images and the JSONL files."),
                split: list[str] = typer.Option(["calib", "dev", "test"], help="Splits to write (repeatable)."),
                n: Optional[int] = typer.Option(None, min=1, help="Items per split (default: the split's size).")):
    """Write the synthetic shapes benchmark: PNG images and one JSONL file per split."""
    from .evaluation import shapes

    try:
        for name in split:
            path = shapes.write_split(name, out, n if n is not None or name != "train" else 10000)
            console.print(f"wrote {path}")
    except ValueError as err:
        _fail(str(err))


if __name__ == "__main__":
    app()
