"""Stage 4, annotation (the UI's ``annotation`` asset group), in three packages by job:

- :mod:`.queue`: what annotators are given: the priority list, the queue by strategy, work
  packages and their versions;
- :mod:`.intake`: the annotators' side: credentials, their worklist and next case, what they
  hand back (the inbox, label files read by organ name, validation, the immutable store and
  quarantine) and the sensor's pass over the inbox;
- :mod:`.labelled`: the labelled dataset: revisions, reassembly with provenance, every case's
  label each round, effort, the round's answers and where the campaign stands.

Layers (import-linter): ``labelled`` > ``intake`` > ``queue``. Nothing here imports torch or
MONAI: sensors and ``alqa submit`` stay light.
"""
