"""The findings collector: stores each finding once, counts it once, and exports it.

It reads the findings stream through the `collector` group and keeps, per task, every
finding and a summary; per run, the tasks and how many finished; per vendor and model,
running totals. `shared.bus.findings` reads these back for the CLI.
"""
