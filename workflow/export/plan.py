"""The old name of workflow/export/index.py (the export index), kept only while rules/export_common.smk and
workflow/cli_export.py still import it from here; delete it once they import workflow.export.index."""

from workflow.export.index import export_ids, export_settings, read_export_index, write_export_index  # noqa: F401
