"""tlsweep: the Python package that the Snakemake rules call."""
