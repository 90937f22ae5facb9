"""augment stage of avatar-jax."""
