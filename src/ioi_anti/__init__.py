"""ioi-anti
"""

__version__ = "0.1"
