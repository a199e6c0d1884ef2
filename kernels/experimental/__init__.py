"""Kernel families kept runnable and tested but out of the hot path: no default plan list
offers them (like llm.c's dev/cuda scratch kernels). Each module says what it measured and
why it stays here; run one by forcing its plan.

    stream_k.py   stream-K matmul (plan knob STREAM_K), forced through kernels.matmul.launch
"""
