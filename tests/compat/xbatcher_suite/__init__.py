"""xbatcher 0.4's own test suite, run against arcoforge.compat.xbatcher."""
