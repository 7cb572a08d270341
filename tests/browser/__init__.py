"""Helpers of the real-browser tests (tests/test_browser.py): the page origin and its pages."""
