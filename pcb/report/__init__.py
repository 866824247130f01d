"""The comparison of one or more runs: `comparison.write_comparison` (`python -m pcb report`).

- `runs`: a run folder's records, trusted through its manifest.
- `accuracy_table`, `throughput_table`: the two tables; `published`: the guide's figures.
- `consistency`: whether runs may be compared (same checkpoint, same dataset).
- `render`: the Markdown, CSV and terminal text; `plots`: the two PNG figures.
"""
