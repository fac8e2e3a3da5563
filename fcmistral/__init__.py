"""fcmistral: teach a Mistral-style causal LM to call functions in the glaive chat format.

The package holds the shared logic; the top-level scripts (train.py, inference.py, ...) are thin
command-line front ends over it.
"""
