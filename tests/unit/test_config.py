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


def test_a_renamed_key_is_refused_under_both_names_in_one_place_and_read_with_a_warning_otherwise(tmp_path):
    """Within one file (or the --set items) the old and the new name of a key are one key given twice; the file's
    value overridden by a --set is the usual layering."""
    both = tmp_path / "both.toml"
    both.write_text("[wholebrain]\nw_e_trace = 0.6\nw_e = 0.5\n")
    with pytest.raises(ConfigError, match=r"both\.toml: both wholebrain\.w_e and wholebrain\.w_e_trace are given"):
        load_config(both)
    with pytest.raises(ConfigError, match=r"--set: both wholebrain\.bg_mu and wholebrain\.bg_mu_mv_ms are given"):
        load_config(overrides=["wholebrain.bg_mu=1.0", "wholebrain.bg_mu_mv_ms=2.0"])
    old = tmp_path / "old.toml"
    old.write_text("[wholebrain]\nw_e = 0.5\n")
    with pytest.warns(FutureWarning, match=r"old\.toml: wholebrain\.w_e is deprecated, use wholebrain\.w_e_trace"):
        cfg = load_config(old, ["wholebrain.w_e_trace=0.7"])
    assert cfg.wholebrain.w_e_trace == 0.7
    with pytest.warns(FutureWarning):
        assert load_config(overrides=["wholebrain.w_e=0.4", "wholebrain.w_e=0.3"]).wholebrain.w_e_trace == 0.3


def test_deferred_warnings_wait_for_success_and_show_each_once():
    """Inside `deferred_warnings` a warning is held back: given once per place when the block ends well, not at
    all when it ends in an error (the error is the one line a bad input gets)."""
    import warnings

    from dtb.errors import DataError, deferred_warnings

    def warn_twice():
        for _ in range(2):
            warnings.warn("held", UserWarning)

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        with deferred_warnings():
            warn_twice()
            assert shown == []
        assert [str(w.message) for w in shown] == ["held"]
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        with pytest.raises(DataError):
            with deferred_warnings():
                warn_twice()
                raise DataError("bad")
        assert shown == []
