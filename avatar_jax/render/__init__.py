"""render stage of avatar-jax."""
