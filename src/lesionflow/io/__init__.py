"""Readers and writers of image files, chosen by suffix; each returns the array and its geometry.

Never interprets what an image shows (no cropping, resizing or thresholds beyond a mask's own):
that is the data stages' work.
"""
