"""Robot packages: each holds its MuJoCo model, its task as jnp functions of a backend-neutral physics
view (:mod:`robots.task`), its default randomization and its splits. ``sim`` registers and runs them."""
