"""Readers and writers of image files, chosen by suffix."""
