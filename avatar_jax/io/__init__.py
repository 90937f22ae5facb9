"""io stage of avatar-jax."""
