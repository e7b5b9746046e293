"""KServe predictor for the fraud-detection ONNX model: Open Inference Protocol v2 (REST, gRPC) and v1.

Run with ``python -m predictor --model-name ... --model-uri ...`` from ``include/serving``.
"""
