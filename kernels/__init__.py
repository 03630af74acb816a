"""Triton GPU kernels, one file per op (installed as facegen_rt.kernels).

Each file holds the @triton.jit kernel and its host launcher. Without a GPU they run
on CPU tensors under TRITON_INTERPRET=1, which is how the tests prove them.
"""
