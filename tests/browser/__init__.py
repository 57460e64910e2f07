"""Helpers for tests that drive JupyterLab in headless Debian Chromium (see test_browser.py)."""
