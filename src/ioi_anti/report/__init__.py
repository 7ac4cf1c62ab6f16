"""The report: the registry of its figures, Markdown and HTML writing, and its sections.
"""
