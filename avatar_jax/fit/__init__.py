"""fit stage of avatar-jax."""
