import pytest

from functional_heads.testbed import tiny_models
from functional_heads.testbed.tiny import save_tiny_qwen2_5_vl


@pytest.fixture(scope="session")
def tiny():
    """Build each tiny architecture once per session; tests must leave the model as they found it."""
    cache = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = tiny_models.build(arch)
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def qwen_folder(tmp_path_factory):
    return save_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen2_5_vl"))


@pytest.fixture(scope="session")
def bundled_vlm():
    """The bundled model (float32) and its processor, loaded once per session."""
    import torch

    from functional_heads.models.loading import load_model, load_processor
    from functional_heads.testbed.bundled import bundled_model_path

    path = bundled_model_path()
    return load_model(path, dtype=torch.float32), load_processor(path)


@pytest.fixture(scope="session")
def blip_itm_folder(tmp_path_factory):
    return tiny_models.save_tiny_blip_itm(tmp_path_factory.mktemp("tiny_blip_itm"))


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory):
    from functional_heads.testbed.bundled import bundled_model_path

    return tiny_models.save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), bundled_model_path())


@pytest.fixture
def installed_plugin(tmp_path):
    """install(module, source, group, name, attribute) -> a folder that, on PYTHONPATH, holds the module and
    an installed distribution declaring `name = module:attribute` under the entry-point group `group`."""
    import textwrap

    def install(module: str, source: str, group: str, name: str, attribute: str):
        folder = tmp_path / "plugin"
        folder.mkdir(exist_ok=True)
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
        info = folder / f"{module}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {module}:{attribute}\n")
        return folder

    return install


@pytest.fixture
def saved_figure(monkeypatch):
    """saved_figure(draw) -> (figure, renderer, saved region in pixels): the matplotlib figure that `draw()`
    saves, drawn again as it was saved, with the part of it the file holds (all of it, or the tight box)."""
    pytest.importorskip("matplotlib", reason="figures need the plot extra")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    caught = {}
    original = Figure.savefig

    def savefig(fig, *args, **kwargs):
        caught["figure"], caught["tight"] = fig, kwargs.get("bbox_inches") == "tight"
        return original(fig, *args, **kwargs)

    def run(draw):
        monkeypatch.setattr(Figure, "savefig", savefig)
        draw()
        fig = caught["figure"]
        canvas = FigureCanvasAgg(fig)  # pyplot let go of it when it closed the figure
        canvas.draw()
        renderer = canvas.get_renderer()
        region = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans) if caught["tight"] else fig.bbox
        return fig, renderer, region

    return run
