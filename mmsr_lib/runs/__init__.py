"""Runs: the results store and the one run-or-load path every notebook and the CLI use."""
