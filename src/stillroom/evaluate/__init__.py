"""Evaluation: teacher vs student vs baseline on a task's test split, and the report.

`report.write_report(run_dir, result)` turns an eval result (the `eval.json` dict) into
`report.md`, a self-contained `report.html` and `plots/*.png` in the run folder.
"""
