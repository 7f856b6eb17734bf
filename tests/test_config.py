import json

import pytest

import functional_heads as fh


def test_preset_is_the_papers_ocean_r1_setting():
    cfg = fh.RescaleConfig.preset("ocean-r1")
    assert (cfg.perc_last_layer, cfg.reas_first_layer, cfg.tau_perc, cfg.tau_reas, cfg.g_perc, cfg.g_reas) == \
        (7, 3, 0.22, 0.01, 1.16, 1.30)
    assert fh.RescaleConfig.preset("ocean-r1", g_perc=1.1).g_perc == 1.1


@pytest.mark.parametrize("field, value, message", [
    ("tau_reas", 0.3, "tau_reas=0.3 must be < tau_perc=0.22"),
    ("g_perc", -1.0, "g_perc=-1.0 is invalid: it must be a number > 0"),
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
