"""Helper programs of the project itself (not shipped with the package): guest.py boots test hosts."""
