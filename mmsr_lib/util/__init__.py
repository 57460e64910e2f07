"""The bottom layer: paths, atomic writes, the component registry, torchrun helpers.

Nothing here imports from the rest of `mmsr_lib`.
"""
