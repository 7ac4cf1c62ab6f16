"""Running the study: Kedro hooks (run lock, settings stamps, cluster lifetime), settings
validation, stages, custom datasets, where jobs run (locally or on Dask), and the run's metadata.
"""
