"""vjepa_agent: V-JEPA world models and latent-space planning."""

from vjepa_agent.world_model import WorldModel

__all__ = ["WorldModel"]
