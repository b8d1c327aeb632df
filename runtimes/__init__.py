"""Code that runs inside mlpack images: the inference server and the Lambda handler.

It ships alone in every image, so it imports only the standard library, numpy, onnxruntime and its server
dependencies, and never `mlpk.packager`.
"""
