"""The study, from its config: torch-free, so the Snakefile parses fast.

Config loading and schema checks (`config`), the grid and its cell ids (`grid`),
training defaults and stage settings (`settings`), the search (`search`), which
tables and charts a study gets (`outputs`) and every result and data path
(`paths`). May import only the standard library, yaml, jsonschema and the
torch-free parts of `workflow.data` (dataset entries) and
`workflow.core.backbones` (what each model accepts).
"""
