"""PyTorch side of scripts/bench/bf16_gemm.sh: the shapes of crates/engine/examples/bf16_bench.rs as
torch.nn.functional.linear / matmul in f32 and under torch.autocast("cpu", dtype=torch.bfloat16) (f32 inputs cast
by autocast, as in training), minimum wall time over 9 runs on all threads and median thread CPU time on 1."""

import sys
import time

import torch

SHAPES = [
    # (label, m, n, k, A transposed, B transposed) as in bf16_bench.rs
    ("fwd 2048x384x384 (qkv/out)", 2048, 384, 384, False, True),
    ("fwd 2048x1536x384 (fc1)", 2048, 1536, 384, False, True),
    ("fwd 2048x384x1536 (fc2)", 2048, 384, 1536, False, True),
    ("dinp 2048x384x1536", 2048, 384, 1536, False, False),
    ("dW 1536x384x2048 (doutT·x)", 1536, 384, 2048, True, False),
]


def operands(m, n, k, ta, tb):
    a = torch.randn(k, m).t() if ta else torch.randn(m, k)
    b = torch.randn(n, k).t() if tb else torch.randn(k, n)
    return a, b


def run(a, b, bf16):
    if bf16:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.matmul(a, b)
    return torch.matmul(a, b)


def measure(fn, threads):
    torch.set_num_threads(threads)
    fn()
    wall = []
    for _ in range(9):
        s = time.perf_counter()
        fn()
        wall.append(time.perf_counter() - s)
    torch.set_num_threads(1)
    fn()
    cpu = []
    for _ in range(5):
        s = time.thread_time()
        fn()
        cpu.append(time.thread_time() - s)
    cpu.sort()
    return min(wall), cpu[len(cpu) // 2]


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    print(f"# torch {torch.__version__}, {threads} threads, oneDNN/MKL as shipped")
    for label, m, n, k, ta, tb in SHAPES:
        a, b = operands(m, n, k, ta, tb)
        flops = 2.0 * m * n * k
        for name, bf16 in (("torch f32", False), ("torch bf16 autocast", True)):
            wmin, cpu1 = measure(lambda: run(a, b, bf16), threads)
            print(f"{label:<30} {name:<20} min_ms {wmin * 1e3:8.3f} TFLOP/s {flops / wmin / 1e12:6.3f}"
                  f"  1thr_cpu_ms {cpu1 * 1e3:8.3f} TFLOP/s {flops / cpu1 / 1e12:6.3f}")


if __name__ == "__main__":
    main()
