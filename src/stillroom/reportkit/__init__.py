"""What every report shares: figures, page templates, and crash-safe file writes.

files.py    write_atomic / atomic_file: temp file beside the target, fsync, os.replace
figures.py  matplotlib figures on an Agg canvas (no pyplot state), as PNG bytes and data: URIs
pages.py    render(template, **context): the jinja2 templates under templates/

Nothing here imports matplotlib or jinja2 until a figure or a page is made, so the file
helpers cost nothing to import.
"""
