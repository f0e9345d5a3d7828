"""vjepa_agent: V-JEPA world models and latent-space planning."""
