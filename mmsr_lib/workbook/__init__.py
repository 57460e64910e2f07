"""The paper workbook: grids of the paper's tables, its numbers, reports, figures, widgets.

This is the top of the library (only `bench`, `plan` and `cli` sit above it); the notebooks
call these modules and narrate.
"""
