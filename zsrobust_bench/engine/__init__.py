"""The evaluation engine: clean pass, then every attack of a protocol on the samples still robust.

Work is split into fixed-size shards of the evaluated index list. A shard's records are written
atomically as soon as its last sample is done; a re-run skips finished shards, so a killed run
loses at most the shards in flight. Shards are the unit of distribution too.

Modules, top to bottom:

- `run`: `evaluate_shards` (shards in, records out, out-of-memory back-off) and `evaluate_shard`.
- `plan`: what to run and how (`EngineConfig`, `EpsAttacks`, their flattening into stages).
- `stream`: the streaming pipeline (clean pass, attack stages, per-shard outcome tables).
- `pool`: the fixed-shape slot pool stepwise attacks (PGD, APGD) run in.
- `batch`: batch attacks (pyautoattack) and the threat-model check of their outputs.
- `blocks`: shards, row blocks and the prefetching loader.
- `device`: precision, memory layout, compilation.
- `records`: the per-sample record, its JSON lines, summaries, shard merging, engine stats.

Determinism: random starts are seeded per sample id and every device call runs the same batch
shape, so for a given batch size the records do not depend on shard size, packing, worker count
or world size (bitwise: no kernel ever sees a different shape). Across batch sizes the kernels
differ and float results can differ in the last bits; a borderline sample can then flip (see
docs/distributed.md). Batch attacks (pyautoattack) draw their random numbers per batch, so they
depend on batch size and shard size as the reference does.

This package's `__init__` imports nothing, so the leaderboard can read `records` without torch.
"""
