"""tlsweep: the Python code behind the Snakemake rules (data, models, training, metrics, charts)."""
