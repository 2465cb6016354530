"""dtb: a distributed spiking simulator of whole-brain networks built from a person's connectome.

The public API is imported lazily, so ``import dtb`` starts no MPI, no CUDA and
compiles nothing::

    import dtb
    net = dtb.Network(seed=1, dt_ms=0.1)
    e = net.population("E", 800, model="lif_cond")
    i = net.population("I", 200, model="lif_cond")
    net.connect(e, [e, i], rule="fixed_in_degree", k=80, weight=0.4, delay_ms=1.5)
    net.connect(i, [e, i], rule="fixed_in_degree", k=20, weight=2.0, delay_ms=0.8)
    net.drive([e, i], rate_hz=8.0, k=100, weight=0.4)
    with dtb.Session(net, out="mine.h5") as s:
        s.record(spikes=[e, i], state={"v_mv": e[:10]})
        s.run(200.0)
    run = dtb.open_run("mine.h5")

The built-in models: ``dtb.wholebrain(...)`` and ``dtb.pd14(...)`` return a `Network`;
``dtb.run(dtb.load_config("run.toml"), "out.h5")`` is what ``dtb run`` does.
"""

from importlib import import_module

_API = {
    "Network": "dtb.model.builder", "PopulationView": "dtb.model.builder",
    "Session": "dtb.session", "wholebrain": "dtb.model.registry", "pd14": "dtb.model.registry",
    "MODELS": "dtb.model.registry", "LifCond": "dtb.model.neurons", "IafPscExp": "dtb.model.neurons",
    "open_run": "dtb.io.analysis", "read_summary": "dtb.io.runfile",
    "load_config": "dtb.config", "Config": "dtb.config", "run": "dtb.driver", "assimilate": "dtb.assimilation.driver",
    "Connectome": "dtb.connectome.connectome", "load_connectome": "dtb.connectome.connectome",
    "Recipe": "dtb.model.recipe", "Context": "dtb.context", "partition": "dtb.partition",
    "DTBError": "dtb.errors", "ConfigError": "dtb.errors", "DataError": "dtb.errors", "ResourceError": "dtb.errors",
    "UsageError": "dtb.errors",
}
__all__ = sorted(_API)


def __getattr__(name):
    if name == "__version__":
        from dtb.session import version

        return version()
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'dtb' has no attribute {name!r}")
