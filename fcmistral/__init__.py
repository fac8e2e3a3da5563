"""fcmistral: teach a Mistral-style causal LM to call functions in the glaive chat format.

The package holds the shared logic, one sub-package per stage of the pipeline: ``format`` (the
glaive rows and function calls; the template itself is ``prompt``), ``data`` (tokenizing, labels,
packing), ``training`` (model loading, LoRA, merging, FSDP), ``serving`` (generation, the calling
loop, schemas and callables, the HTTP server), ``evaluation`` (benchmark items, scoring) and
``demo`` (the tiny model, the sample data and the demo's verdict). The top-level scripts
(train.py, inference.py, ...) are thin command-line front ends over it.
"""
