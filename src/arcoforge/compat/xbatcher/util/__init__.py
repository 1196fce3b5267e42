"""xbatcher's ``util`` package: :func:`print_versions.show_versions`."""
