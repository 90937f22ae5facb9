"""landmarks stage of avatar-jax."""
