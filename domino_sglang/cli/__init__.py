"""Command-line entry points (each is ``main(argv=None) -> int``)."""
