"""ioi-anti
"""

__version__ = "0.9.0"
