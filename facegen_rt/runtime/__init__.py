"""Runtimes that need neither torch nor the rest of facegen_rt.

:mod:`facegen_rt.runtime.ort` samples faces from exported ONNX graphs with onnxruntime
and numpy only. Importing this package imports nothing else (facegen_rt/__init__.py
only defines the version), so it works in an environment without torch.
:mod:`facegen_rt.runtime.allocator` keeps freed memory mapped between steps (glibc's
mallopt through ctypes), which the `facegen-rt` command and the benchmarks turn on.
"""
