"""evaluate stage of avatar-jax."""
