"""regress stage of avatar-jax."""
