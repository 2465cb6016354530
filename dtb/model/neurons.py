"""Neuron models: parameters with units, and the per-population tables the kernels read.

Two models, one per network:

- ``iaf_psc_exp``: current-based LIF with exponential synaptic currents, integrated
  exactly (Rotter & Diesmann 1999), as NEST's ``iaf_psc_exp`` (PD14 microcircuit).
- ``lif_cond``: the Digital Twin Brain neuron: LIF with four exponentially decaying
  receptor traces (AMPA, NMDA, GABA-A, GABA-B) driving conductance currents, plus an
  Ornstein-Uhlenbeck background current. Integrated with the exponential Euler
  step, which is exact for V while the conductances are held over one step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from dtb.errors import ConfigError

def check_parameters(params) -> None:
    """A `ConfigError` unless every field of a neuron's parameters is a finite real number, its time constants and
    capacitance are positive, its refractory time and conductances are not negative, and it resets below threshold.
    """
    values = {}
    for f in fields(params):
        v = getattr(params, f.name)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
            raise ConfigError(f"{params.model}: {f.name} = {v!r}: must be a finite number")
        values[f.name] = float(v)
    for name, v in values.items():
        if (name.startswith("tau_") or name in ("c", "c_m_pf")) and v <= 0:
            raise ConfigError(f"{params.model}: {name} = {v:g}: must be > 0")
        if (name == "t_ref_ms" or name.startswith("g_") or name == "ou_sigma") and v < 0:
            raise ConfigError(f"{params.model}: {name} = {v:g}: must be >= 0")
    if values["v_reset_mv"] >= values["v_th_mv"]:
        raise ConfigError(f"{params.model}: v_reset_mv = {values['v_reset_mv']:g} must be below v_th_mv = "
                          f"{values['v_th_mv']:g}")


# Columns of the per-population parameter table of iaf_psc_exp (float64).
IAF_COLUMNS = ("p22", "p21_ex", "p21_in", "p20", "p11_ex", "p11_in", "theta_mv", "v_reset_mv", "i_e_pa",
               "ref_steps", "poisson_lam", "w_ext_pa", "e_l_mv")
# Columns of the per-population parameter table of lif_cond (float64). The kernels index both
# tables by position: keep the order.
LIF_COLUMNS = ("g_l", "v_l_mv", "v_th_mv", "v_reset_mv", "ref_steps", "i_ext",
               "g_ampa", "g_nmda", "g_gaba_a", "g_gaba_b", "e_ampa_mv", "e_nmda_mv", "e_gaba_a_mv", "e_gaba_b_mv",
               "d_ampa", "d_nmda", "d_gaba_a", "d_gaba_b", "ou_mu", "ou_decay", "ou_noise", "dt_over_c",
               "poisson_lam", "w_ext")
# Per-neuron multipliers of lif_cond parameters (rows of the kernel's ``gain`` array): the
# conductance gains of the four receptors and the gain of the background current's mean.
# Region hyperparameters act through them (`dtb.model.hyper`).
LIF_GAINS = ("g_ampa", "g_nmda", "g_gaba_a", "g_gaba_b", "i_bg")


@dataclass(frozen=True)
class IafPscExp:
    """Parameters of ``iaf_psc_exp`` (NEST names, PD14 defaults).

    Attributes are physical with units in their names; ``i_e_pa`` is a constant
    input current. V is integrated relative to ``e_l_mv``.
    """

    model: ClassVar[str] = "iaf_psc_exp"

    c_m_pf: float = 250.0
    tau_m_ms: float = 10.0
    tau_syn_ex_ms: float = 0.5
    tau_syn_in_ms: float = 0.5
    t_ref_ms: float = 2.0
    e_l_mv: float = -65.0
    v_reset_mv: float = -65.0
    v_th_mv: float = -50.0
    i_e_pa: float = 0.0

    def __post_init__(self) -> None:
        check_parameters(self)

    def table_row(self, dt_ms: float, poisson_lam: float = 0.0, w_ext_pa: float = 0.0) -> np.ndarray:
        """Exact-integration propagators and thresholds for one population.

        Parameters
        ----------
        dt_ms : float
            Time step (ms).
        poisson_lam : float
            Expected external Poisson spikes per neuron per step.
        w_ext_pa : float
            Weight of one external spike (pA).

        Returns
        -------
        ndarray, shape (len(IAF_COLUMNS),), float64
        """
        h, tau, c = dt_ms, self.tau_m_ms, self.c_m_pf
        p22 = math.exp(-h / tau)

        def p21(tau_s):
            # response of V to a unit synaptic current after one step (Rotter & Diesmann 1999)
            if abs(tau - tau_s) < 1e-12 * tau:
                return h / c * math.exp(-h / tau)
            return tau * tau_s / (c * (tau - tau_s)) * (math.exp(-h / tau) - math.exp(-h / tau_s))

        row = dict(p22=p22, p21_ex=p21(self.tau_syn_ex_ms), p21_in=p21(self.tau_syn_in_ms),
                   p20=tau / c * (1.0 - p22), p11_ex=math.exp(-h / self.tau_syn_ex_ms),
                   p11_in=math.exp(-h / self.tau_syn_in_ms), theta_mv=self.v_th_mv - self.e_l_mv,
                   v_reset_mv=self.v_reset_mv - self.e_l_mv, i_e_pa=self.i_e_pa,
                   ref_steps=float(round(self.t_ref_ms / h)), poisson_lam=poisson_lam, w_ext_pa=w_ext_pa,
                   e_l_mv=self.e_l_mv)
        return np.array([row[k] for k in IAF_COLUMNS], dtype=np.float64)


@dataclass(frozen=True)
class LifCond:
    """Parameters of the DTB ``lif_cond`` neuron (``shared/reference/dtb_model.md``).

    Conductances are relative to the capacitance (``c`` = 1), so currents are in mV/ms.
    Receptor order everywhere: AMPA, NMDA, GABA-A, GABA-B.
    """

    model: ClassVar[str] = "lif_cond"

    c: float = 1.0
    t_ref_ms: float = 5.0
    g_l: float = 0.03
    v_l_mv: float = -75.0
    v_th_mv: float = -50.0
    v_reset_mv: float = -65.0
    g_ampa: float = 5 / 275
    g_nmda: float = 5 / 4000
    g_gaba_a: float = 3 / 30
    g_gaba_b: float = 3 / 730
    e_ampa_mv: float = 0.0
    e_nmda_mv: float = 0.0
    e_gaba_a_mv: float = -70.0
    e_gaba_b_mv: float = -100.0
    tau_ampa_ms: float = 2.0
    tau_nmda_ms: float = 40.0
    tau_gaba_a_ms: float = 10.0
    tau_gaba_b_ms: float = 50.0
    i_ext: float = 0.0
    ou_mu: float = 0.52
    ou_sigma: float = 0.16
    ou_tau_ms: float = 5.0

    def __post_init__(self) -> None:
        check_parameters(self)

    def table_row(self, dt_ms: float, poisson_lam: float = 0.0, w_ext: float = 0.0) -> np.ndarray:
        """Decay factors and parameters for one population.

        Parameters
        ----------
        dt_ms : float
            Time step (ms).
        poisson_lam : float
            Expected external Poisson spikes per neuron per step (0: no external drive).
        w_ext : float
            Jump of the excitatory traces (AMPA and NMDA) per external spike, in the units
            of a synaptic weight of lif_cond (dimensionless trace increment).

        Returns
        -------
        ndarray, shape (len(LIF_COLUMNS),), float64
        """
        h = dt_ms
        row = dict(g_l=self.g_l, v_l_mv=self.v_l_mv, v_th_mv=self.v_th_mv, v_reset_mv=self.v_reset_mv,
                   ref_steps=float(round(self.t_ref_ms / h)), i_ext=self.i_ext,
                   g_ampa=self.g_ampa, g_nmda=self.g_nmda, g_gaba_a=self.g_gaba_a, g_gaba_b=self.g_gaba_b,
                   e_ampa_mv=self.e_ampa_mv, e_nmda_mv=self.e_nmda_mv, e_gaba_a_mv=self.e_gaba_a_mv,
                   e_gaba_b_mv=self.e_gaba_b_mv,
                   d_ampa=math.exp(-h / self.tau_ampa_ms), d_nmda=math.exp(-h / self.tau_nmda_ms),
                   d_gaba_a=math.exp(-h / self.tau_gaba_a_ms), d_gaba_b=math.exp(-h / self.tau_gaba_b_ms),
                   ou_mu=self.ou_mu, ou_decay=math.exp(-h / self.ou_tau_ms),
                   ou_noise=self.ou_sigma * math.sqrt(1.0 - math.exp(-2.0 * h / self.ou_tau_ms)),
                   dt_over_c=h / self.c, poisson_lam=poisson_lam, w_ext=w_ext)
        return np.array([row[k] for k in LIF_COLUMNS], dtype=np.float64)
