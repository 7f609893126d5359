"""Conditional flow matching (independent or minibatch-OT coupling) and ODE sampling, for latent generation.

- :class:`FlowModel` — velocity field ``v(x, t)`` around any net (``forward(x, t)``).
- :func:`cfm_loss` (``model, z1, generator, coupling``), :func:`ot_pair` (exact minibatch OT with POT).
- :func:`flow_sample` (``model, z0, steps, method``: heun / euler / dopri5 / rk4 via torchdiffeq).
- :func:`fit_flow` — trainer on :func:`latentgeo.train.train_loop` (in memory, or checkpointed with ``out=``);
  :func:`load_flow` reads a training folder back.
"""
from latentgeo.flows.cfm import FLOW_METHODS, FlowModel, cfm_loss, fit_flow, flow_sample, load_flow, ot_pair

__all__ = ["FlowModel", "cfm_loss", "ot_pair", "flow_sample", "fit_flow", "load_flow", "FLOW_METHODS"]
