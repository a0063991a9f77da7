"""Triton kernels of the restoration core, installed as ``iconface_video.kernels``.

Each kernel file holds the Triton forward and backward, an exact PyTorch twin (the CPU path
and the test oracle) and a dispatcher that uses Triton only for CUDA tensors.
"""
