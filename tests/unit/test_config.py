import pytest

from dtb.config import describe, load_config
from dtb.errors import ConfigError


def test_defaults():
    cfg = load_config()
    assert cfg.model == "wholebrain"
    assert cfg.simulation.dt_ms == 0.1
    assert cfg.wholebrain.subject == "101309"
    assert cfg.connectome_path() is None


def test_overrides_and_types():
    cfg = load_config(overrides=["model=pd14", "simulation.t_ms=250", "pd14.n_scale=0.5", "wholebrain.n_neurons=1e5",
                                 'wholebrain.subject="102311"', "recording.spikes=false"])
    assert cfg.model == "pd14"
    assert cfg.simulation.t_ms == 250.0 and isinstance(cfg.simulation.t_ms, float)
    assert cfg.wholebrain.n_neurons == 100000 and isinstance(cfg.wholebrain.n_neurons, int)
    assert cfg.wholebrain.subject == "102311"
    assert cfg.recording.spikes is False


def test_toml_file_and_relative_paths(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text('model = "wholebrain"\n[simulation]\nt_ms = 50\nseed = 9\n[wholebrain]\nconnectome = "c.h5"\n')
    cfg = load_config(p, ["simulation.seed=10"])
    assert cfg.simulation.t_ms == 50.0
    assert cfg.simulation.seed == 10
    assert cfg.connectome_path() == (tmp_path / "c.h5").resolve()


def test_a_config_saved_with_a_byte_order_mark_reads_as_without(tmp_path):
    p = tmp_path / "run.toml"
    p.write_bytes("\ufeff[simulation]\nt_ms = 50\n".encode())
    assert load_config(p).simulation.t_ms == 50.0


def test_round_trip_toml(tmp_path):
    cfg = load_config(overrides=["model=pd14", "pd14.k_scale=0.5"])
    p = tmp_path / "resolved.toml"
    p.write_text(cfg.to_toml())
    assert load_config(p) == cfg


@pytest.mark.parametrize("override,needle", [
    ("simulation.t_ms=0", "simulation.t_ms = 0.0: must be a number > 0"),
    ("simulation.t_ms=-5", "simulation.t_ms"),
    ("simulation.dt_ms=2", "<= 1"),
    ("simulation.seed=-1", "simulation.seed = -1: must be an integer >= 0"),
    ("simulation.seed=1.5", "an integer"),
    ("simulation.backend=tpu", "one of 'cpu'"),
    ("model=ring", "model = 'ring': must be one of 'wholebrain', 'pd14'"),
    ("pd14.n_scale=0", "pd14.n_scale"),
    ("pd14.k_scale=1.5", "<= 1"),
    ("wholebrain.in_degree=true", "an integer"),
    ("wholebrain.n_neurons=nan", "wholebrain.n_neurons"),
    ("recording.spikes=3", "true or false"),
    ("simulation.foo=1", "unknown key 'simulation.foo'"),
    ("nosection.x=1", "unknown key 'nosection.x'"),
    ("wholebrain.k_local_e=0.9", "k_local_e + wholebrain.k_local_i"),
    ("no_equals_sign", "expected section.key=value"),
])
def test_bad_values_name_key_and_range(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override])
    msg = str(err.value)
    assert needle in msg
    assert "\n" not in msg


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[simulation\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[simulation]\ntmax = 3\n")
    with pytest.raises(ConfigError, match=f"{unknown}: unknown key 'simulation.tmax'"):
        load_config(unknown)


def test_describe_lists_every_key():
    table = describe()
    for key in ("model", "simulation.t_ms", "simulation.dt_ms", "simulation.seed", "wholebrain.n_neurons",
                "wholebrain.in_degree", "wholebrain.subject", "wholebrain.connectome", "pd14.n_scale", "pd14.k_scale"):
        assert f"`{key}`" in table
