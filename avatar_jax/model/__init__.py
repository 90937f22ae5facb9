"""model stage of avatar-jax."""
