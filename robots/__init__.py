"""Robot packages (MJCF, task, default randomization, splits). None are registered yet."""
