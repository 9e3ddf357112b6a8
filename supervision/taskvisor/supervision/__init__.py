"""taskvisor.supervision: supervisors, restart policies and the policy simulator."""

__all__: list[str] = []
