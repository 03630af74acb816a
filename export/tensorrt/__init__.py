"""TensorRT engine building from the exported ONNX graphs (see README.md here).

TensorRT is not installable on the machines this project is built and tested on, so
nothing in this package has been run: build_engine.py is a prepared script, and
PLUGINS.md the plan for IPluginV3 plugins of the fused ops.
"""
