import json

import pytest

import functional_heads as fh
from functional_heads.utils.errors import UserError


def test_preset_is_the_papers_ocean_r1_setting():
    cfg = fh.RescaleConfig.preset("ocean-r1")
    assert (cfg.perc_last_layer, cfg.reas_first_layer, cfg.tau_perc, cfg.tau_reas, cfg.g_perc, cfg.g_reas) == \
        (7, 3, 0.22, 0.01, 1.16, 1.30)
    assert fh.RescaleConfig.preset("ocean-r1", g_perc=1.1).g_perc == 1.1


@pytest.mark.parametrize("field, value, message", [
    ("tau_reas", 0.3, "tau_reas=0.3 must be < tau_perc=0.22"),
    ("g_perc", -1.0, "g_perc=-1.0 is invalid: it must be a finite number > 0"),
    ("g_reas", 0, "g_reas=0 is invalid"),
    ("tau_perc", 1.5, r"tau_perc=1.5 is invalid: it must be a number in \[0, 1\]"),
    ("perc_last_layer", -1, "perc_last_layer=-1 is invalid: it must be an integer >= 0"),
    ("query_offset", 0, "query_offset=0 is invalid: it must be an integer <= -1"),
])
def test_invalid_settings_name_the_field_and_range(field, value, message):
    with pytest.raises(ValueError, match=message):
        fh.RescaleConfig.preset("ocean-r1", **{field: value})


def test_layer_bound_outside_the_model():
    cfg = fh.RescaleConfig.preset("ocean-r1")
    with pytest.raises(ValueError, match=r"perc_last_layer=7 is outside the model: allowed range is 0..3"):
        cfg.check_layers(4)
    cfg.check_layers(28)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="Known presets: ocean-r1"):
        fh.RescaleConfig.preset("nope")


def test_round_trip_through_dict():
    cfg = fh.RescaleConfig.preset("ocean-r1", per_token=True)
    assert fh.RescaleConfig.from_dict(cfg.to_dict()) == cfg


def test_new_fields_round_trip_and_stay_out_of_files_at_their_defaults():
    cfg = fh.RescaleConfig(1, 5, 0.3, 0.4, layer_gains=[1.0, 1.2], query_tokens=4)  # bands apart: any thresholds
    data = json.loads(json.dumps(cfg.to_dict()))
    assert fh.RescaleConfig.from_dict(data) == cfg and cfg.layer_gains == (1.0, 1.2)
    plain = fh.RescaleConfig.preset("ocean-r1").to_dict()
    assert "layer_gains" not in plain and "query_tokens" not in plain  # older files and run identities unchanged
    with pytest.raises(ValueError, match="query_tokens=0 is invalid"):
        fh.RescaleConfig(1, 5, 0.3, 0.1, query_tokens=0)
    with pytest.raises(ValueError, match="where the bands overlap"):
        fh.RescaleConfig(5, 1, 0.3, 0.4)


@pytest.mark.parametrize("field, value, message", [
    ("g_perc", float("inf"), "g_perc=inf is invalid: it must be a finite number > 0"),
    ("g_reas", float("-inf"), "g_reas=-inf is invalid: it must be a finite number > 0"),
    ("g_perc", float("nan"), "g_perc=nan is invalid"),
    ("g_reas", 1e30, r"g_reas=1e\+30 is invalid: it must lie in \[0.1, 10\]"),
    ("g_perc", 1e-3, r"g_perc=0.001 is invalid: it must lie in \[0.1, 10\].*allow_extreme_gains"),
    ("g_perc", 10 ** 400, "g_perc=1000.* is invalid: it must be a finite number"),
    ("layer_gains", (1.0, float("inf")), r"layer_gains\[1\]=inf is invalid"),
    ("layer_gains", (1.0, 50.0), r"layer_gains\[1\]=50.0 is invalid: it must lie in"),
    ("layer_gains", (), "layer_gains=.* is invalid"),
    ("allow_extreme_gains", "yes", "allow_extreme_gains='yes' is invalid"),
])
def test_gains_must_be_finite_positive_and_sane(field, value, message):
    with pytest.raises(UserError, match=message):
        fh.RescaleConfig(1, 5, 0.3, 0.1, **{field: value})


def test_extreme_gains_need_the_opt_out_and_it_survives_files():
    cfg = fh.RescaleConfig(1, 5, 0.3, 0.1, g_perc=20.0, g_reas=0.05, allow_extreme_gains=True)
    again = fh.RescaleConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.allow_extreme_gains
    assert "allow_extreme_gains" not in fh.RescaleConfig.preset("ocean-r1").to_dict()  # files stay as they were
    with pytest.raises(ValueError, match="finite number > 0"):  # the opt-out is for range, never for inf
        fh.RescaleConfig(1, 5, 0.3, 0.1, g_perc=float("inf"), allow_extreme_gains=True)


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN"])
def test_settings_files_with_non_numbers_are_refused_naming_the_file(tmp_path, literal):
    path = tmp_path / "settings.json"
    path.write_text('{"config": {"perc_last_layer": 1, "reas_first_layer": 5, "tau_perc": 0.3, "tau_reas": 0.1, '
                    f'"g_perc": {literal}}}}}')
    with pytest.raises(ValueError, match=f"Cannot read settings from {path}: it holds {literal}"):
        fh.RescaleConfig.resolve(settings=path)


def test_settings_file_gains_are_checked_and_named_even_when_a_flag_is_given(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"config": {**fh.RescaleConfig(1, 5, 0.3, 0.1).to_dict(), "g_perc": 1e30}}))
    with pytest.raises(ValueError, match=rf"Cannot read settings from {path}: g_perc=1e\+30 is invalid"):
        fh.RescaleConfig.resolve(settings=path, g_reas=1.2)
    path.write_text(json.dumps({"config": fh.RescaleConfig(1, 5, 0.3, 0.1).to_dict()}))
    assert fh.RescaleConfig.resolve(settings=path, g_reas=1.2).g_reas == 1.2
    with pytest.raises(ValueError, match="g_reas=inf is invalid"):  # a bad flag over a good file
        fh.RescaleConfig.resolve(settings=path, g_reas=float("inf"))


def test_bundled_settings_go_through_the_same_checks(tmp_path):
    from functional_heads.testbed.bundled import bundled_model_path

    (tmp_path / "settings.json").write_text((bundled_model_path() / "settings.json").read_text()
                                            .replace('"g_perc": 1.5', '"g_perc": Infinity'))
    with pytest.raises(ValueError, match="settings.json is not a readable settings file: it holds Infinity"):
        fh.bundled_settings(tmp_path, candidate=True)
    (tmp_path / "settings.json").write_text((bundled_model_path() / "settings.json").read_text()
                                            .replace('"g_perc": 1.5', '"g_perc": 1e30'))
    with pytest.raises(ValueError, match=r"settings.json does not hold valid settings: g_perc=1e\+30"):
        fh.bundled_settings(tmp_path, candidate=True)


def test_inert_reason_says_when_settings_change_nothing():
    assert fh.RescaleConfig(1, 5, 0.3, 0.1).inert_reason() == "its gains are 1 (g_perc=1, g_reas=1)"
    assert fh.RescaleConfig(1, 5, 0.3, 0.1, layer_gains=(1, 1.0)).inert_reason() == "its layer_gains are all 1"
    assert fh.RescaleConfig(1, 5, 0.3, 0.1, g_reas=1.2).inert_reason() is None
    assert fh.RescaleConfig(1, 5, 0.3, 0.1, layer_gains=(1, 1.1)).inert_reason() is None
