"""A run's records: what every stage read, how it was asked and what it wrote, by content.

- `digest`: content digests of files (BLAKE3/128), cached per run by size, times and inode.
- `digest_records`: the digest of each bin and dump, and of what it was made from.
- `fingerprint`: the fingerprint of a file, a folder, the dataset's two splits.
- `manifest`: `<run>/manifest.json`, a stage run recorded (`run_recorded`), and the view
  the report trusts figures through (`ManifestView`).
- `stage_plans`: what each stage of the command line reads and writes.
- `runlock`: one stage per run folder at a time.
- `verify`: `pcb verify`, every recorded file read again.
"""
