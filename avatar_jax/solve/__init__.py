"""solve stage of avatar-jax."""
