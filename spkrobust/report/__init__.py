"""Aggregation of evaluation records and the human-readable report, one module per concept.

``aggregate``  ``spkrobust aggregate``: records + metrics + clean JSONs -> summary.csv, models.csv,
               records.json
``data``       the aggregated tables read back, and the queries on them
``claims``     the studies' five claims on the measured numbers
``tables``     tables.md and checks.md
``plots``      the figures (the only matplotlib import)
``render``     ``spkrobust report``: every report file from the aggregated files
``fmt``        text formatting shared by the above

Importing the package imports none of them (``spkrobust.cli`` loads the stage's module).
"""
