"""texture stage of avatar-jax."""
