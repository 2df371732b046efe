"""Configuration validation: exact one-line messages naming parameter, value and range."""

import pytest

from npu.generators.config import ConfigError, NPUConfig, load_config


def test_default_file_matches_defaults():
    assert load_config("configs/default.toml") == NPUConfig()


@pytest.mark.parametrize("changes, message", [
    ({"rows": 0}, "rows = 0 is invalid: must be an integer from 1 to 64"),
    ({"cols": 65}, "cols = 65 is invalid: must be an integer from 1 to 64"),
    ({"acc_width": 4}, "acc_width = 4 is invalid: must be an integer from 19 to 64"),
    ({"data_width": 1}, "data_width = 1 is invalid: must be an integer from 2 to 16"),
    ({"rows": 8.0}, "rows = 8.0 is invalid: must be an integer"),
    ({"rows": True}, "rows = True is invalid: must be an integer"),
    ({"act_depth": 1}, "act_depth = 1 is invalid"),
    ({"wgt_depth": 15}, "wgt_depth = 15 is invalid: must be an integer from 16 to 65536"),
    ({"name": "2npu"}, "name = '2npu' is invalid"),
    ({"sparsity": "3:4"}, "sparsity = '3:4' is invalid for rows = 8: N = 3 must divide rows"),
    ({"sparsity": "2:3"}, "sparsity = '2:3' is invalid: allowed: 'dense' or 'N:M' with M in 2, 4, 8, 16"),
    ({"sparsity": "4:4"}, "sparsity = '4:4' is invalid"),
    ({"sparsity": 24}, "sparsity = 24 is invalid: must be a string"),
    ({"sparsity": "sparse"}, "sparsity = 'sparse' is invalid"),
    ({"compute_queue": 6}, "compute_queue = 6 is invalid: must be a power of two from 2 to 16"),
    ({"dma_queue": 1}, "dma_queue = 1 is invalid: must be an integer from 2 to 16"),
    ({"perf_counter_bits": 64}, "perf_counter_bits = 64 is invalid: must be an integer from 32 to 48"),
    ({"ring_bits": 3}, "ring_bits = 3 is invalid: must be an integer from 4 to 32"),
    ({"perf_counters": "some"}, "perf_counters = 'some' is invalid: allowed: 'all', 'cycles'"),
    ({"dispatch": "parallel"}, "dispatch = 'parallel' is invalid: allowed: 'overlapped', 'sequential'"),
    ({"requantiser": "fast"}, "requantiser = 'fast' is invalid: allowed: 'pipelined', 'serial'"),
    ({"activations": "shifted"}, "activations = 'shifted' is invalid: allowed: 'systolic', 'broadcast'"),
    ({"register_slices": 0}, "register_slices = 0 is invalid: must be true or false"),
])
def test_bad_values_name_the_parameter(changes, message):
    with pytest.raises(ConfigError) as info:
        NPUConfig(**changes)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_acc_width_minimum_follows_rows_and_data_width():
    assert NPUConfig(rows=1, cols=1, acc_width=16).psum_width == 16
    with pytest.raises(ConfigError, match="from 20 to 64"):
        NPUConfig(rows=9, acc_width=19)


@pytest.mark.parametrize("text, message", [
    ("rows = 4\n", "parameter 'rows' belongs in the [array] table"),
    ("[array]\nrowz = 4\n", "unknown parameter array.rowz"),
    ("colour = 1\n", "unknown parameter 'colour'"),
    ("array = 3\n", "[array] must be a table"),
    ("[array\n", "not valid TOML"),
    ("[array]\nrows = 'eight'\n", "rows = 'eight' is invalid: must be an integer"),
])
def test_bad_files(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.toml")


def test_overrides_apply_and_validate(tmp_path):
    assert load_config("configs/default.toml", rows=3, cols=5).macs_per_cycle == 15
    with pytest.raises(ConfigError, match="rows = 0"):
        load_config("configs/default.toml", rows=0)


def test_round_trip_through_dict():
    config = NPUConfig(rows=3, cols=5, acc_width=24, act_depth=100, name="core")
    assert NPUConfig.from_dict(config.to_dict()) == config


def test_small_device_settings_from_toml(tmp_path):
    """The small-FPGA control settings live in [control] and [array] and round-trip."""
    path = tmp_path / "small.toml"
    path.write_text('[array]\nrequantiser = "serial"\nppu_lanes = 1\n'
                    '[control]\ncompute_queue = 2\ndma_queue = 2\nperf_counter_bits = 32\nregister_slices = false\n')
    config = load_config(path)
    assert (config.requantiser, config.compute_queue, config.dma_queue, config.perf_counter_bits,
            config.register_slices) == ("serial", 2, 2, 32, False)
    assert NPUConfig.from_dict(config.to_dict()) == config
    path.write_text("[control]\nqueue = 2\n")
    with pytest.raises(ConfigError, match="unknown parameter control.queue; allowed in \\[control\\]: compute_queue"):
        load_config(path)


def test_config_from_generated_manifest(tmp_path):
    """The runtime can tile for a design from the npu.json written beside its Verilog."""
    from npu.generators.verilog import generate
    config = NPUConfig(rows=4, cols=6, act_depth=128, bus_width=64)
    _, manifest = generate(config, tmp_path)
    assert load_config(manifest) == config
    (tmp_path / "other.json").write_text('{"not": "a manifest"}')
    with pytest.raises(ConfigError, match="not an NPU manifest"):
        load_config(tmp_path / "other.json")
