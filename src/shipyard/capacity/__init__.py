"""Capacity planning: how much memory, how many devices and what it costs to serve a model for a
workload, from the model's architecture, the hardware's published figures and the formulas that
connect them (`shipyard plan`, docs/plan.md)."""

from shipyard.errors import InvalidRequest


class PlanError(InvalidRequest):
    """A planner input that cannot be used; the message names the option and the fix."""
