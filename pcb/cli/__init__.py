"""`python -m pcb <stage>`: the command line every stage image runs.

- `options`: every stage and every option of every stage, declared once (the Invoke tasks are
  generated from the same table).
- `types`: the argument types.
- `parser`: the parser, generated from the table.
- `commands`: one function per stage, each calling one library function.
- `main`: parsing, then every stage locked and recorded in its run's manifest; the one main().
- `preview`: the vendor tool commands a stage's argv would run (atc, ais_bench, trtexec).
"""
