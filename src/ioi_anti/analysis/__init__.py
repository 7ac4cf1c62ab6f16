"""Analysis of measured heads: categories and correlations, and the study's published tables
(their audit, and a run set beside them).
"""
