"""dtb: a distributed spiking simulator of whole-brain networks built from a person's connectome.

The public API is imported lazily, so ``import dtb`` starts no MPI, no CUDA and
compiles nothing::

    import dtb
    cfg = dtb.load_config("run.toml", ["simulation.t_ms=500"])
    summary = dtb.run(cfg, "out.h5")
"""

from importlib import import_module

_API = {
    "load_config": "dtb.config", "Config": "dtb.config",
    "Connectome": "dtb.connectome.connectome", "load_connectome": "dtb.connectome.connectome",
    "Recipe": "dtb.model.recipe", "Population": "dtb.model.recipe", "Projection": "dtb.model.recipe",
    "Partition": "dtb.partition", "Context": "dtb.context", "build_local": "dtb.network",
    "LocalNetwork": "dtb.network", "Simulation": "dtb.simulation", "SerialExchange": "dtb.exchange",
    "run": "dtb.driver", "make_recipe": "dtb.driver", "read_summary": "dtb.io.runfile",
    "DTBError": "dtb.errors", "ConfigError": "dtb.errors", "DataError": "dtb.errors", "ResourceError": "dtb.errors",
}
__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'dtb' has no attribute {name!r}")
