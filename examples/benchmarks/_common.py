"""Shared helpers of the benchmark scripts (not a test suite).

- `machine_info()` / `machine_block()`: what the numbers were measured on.
- `update_section(name, text)`: rewrites the part of `docs/benchmarks.md`
  between `<!-- name:start -->` and `<!-- name:end -->`, creating the file (with
  a short header) or the section (at the end; `summary-*` sections inside the
  summary block) when missing.
- timing (`time_call`), memory (`reset_peak_rss`, `peak_rss_mb`, `rss_mb`) and
  subprocess (`run_worker`) helpers.

Memory: Linux keeps the peak resident set size of a process in `VmHWM`
(`/proc/self/status`); writing `5` to `/proc/self/clear_refs` resets it, so
the peak of one phase (e.g. a training step) can be read exactly without a
sampling thread. Where that is not possible, `ru_maxrss` (peak since start)
is used and the fact is reported.
"""

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
IMAGES = os.path.join(ROOT, "docs", "images", "benchmarks")

HEADER = """# Benchmarks

Measured by the scripts in `examples/benchmarks/` (they are not tests). Each
section below is rewritten by the script named in it, with the machine it ran
on and the date; run e.g. `python examples/benchmarks/cost.py` to refresh one.
Sections marked (GPU) ran on one NVIDIA H200 (`--section cost-gpu` /
`scaling-gpu`); the others on a small 2-core CPU machine. Compare timings as
ratios within one table, not across tables or machines.

## Summary

<!-- summary:start -->
<!-- summary:end -->
"""


# -- machine ---------------------------------------------------------------


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def total_memory_gb():
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def backend_version(backend):
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return tf.__version__
        if backend == "jax":
            import jax

            return jax.__version__
        if backend == "torch":
            import torch

            return torch.__version__
    except ImportError:
        return "not installed"
    return "?"


def accelerator():
    """Name and memory of the first NVIDIA GPU, or None (from `nvidia-smi`)."""
    try:
        out = (
            subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,memory.total",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            .stdout.strip()
            .splitlines()
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0].strip() if out else None


def device_memory_mb():
    """`(in use, peak)` MB of accelerator memory for the current backend, or None.

    JAX: its allocator's `bytes_in_use` / `peak_bytes_in_use` (the peak cannot
    be reset, so measure in a fresh process); torch: `memory_allocated` /
    `max_memory_allocated`. None on a CPU.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "gpu":
            return None
        stats = device.memory_stats()
        return stats["bytes_in_use"] / 2**20, stats["peak_bytes_in_use"] / 2**20
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        torch.cuda.synchronize()
        return (
            torch.cuda.memory_allocated() / 2**20,
            torch.cuda.max_memory_allocated() / 2**20,
        )
    return None


def machine_info(backends=None):
    """Dict describing the machine and the software versions."""
    import keras

    if backends is None:
        backends = [keras.backend.backend()]
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "memory_gb": round(total_memory_gb(), 1),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backends": {b: backend_version(b) for b in backends},
        "date": datetime.date.today().isoformat(),
        "accelerator": accelerator(),
    }


def machine_block(info=None, backends=None, note=None):
    """Markdown lines describing `machine_info()`."""
    info = info or machine_info(backends)
    versions = ", ".join(f"{k} {v}" for k, v in info["backends"].items())
    host = f"{info['cpu']} ({info['cores']} cores, {info['memory_gb']} GB RAM"
    if info.get("accelerator"):
        where = f"{info['accelerator']}, host {host})"
    else:
        where = f"{host}, shared with other jobs)"
    text = (
        f"*Measured {info['date']} on {where}, python {info['python']}, "
        f"keras {info['keras']}, {versions}.*"
    )
    if note:
        text += f" *{note}*"
    return text


# -- docs/benchmarks.md ------------------------------------------------------


def update_section(name, text, path=DOC):
    """Replaces the text between the `name` markers of `docs/benchmarks.md`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if os.path.exists(path):
        with open(path) as handle:
            document = handle.read()
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        document = HEADER
    block = f"{start}\n{text.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(document):
        document = pattern.sub(lambda _: block, document)
    elif name.startswith("summary-") and "<!-- summary:end -->" in document:
        document = document.replace(
            "<!-- summary:end -->", block + "\n<!-- summary:end -->"
        )
    else:
        document = document.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as handle:
        handle.write(document)
    return path


def format_seconds(value):
    """`1.84 ms` below 0.1 s (GPU steps keep three digits), else `0.154 s`."""
    if value is None:
        return "–"
    if value < 0.1:
        return f"{value * 1e3:.2f} ms"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*header))
    print(fmt.format(*["-" * w for w in widths]))
    for row in rows:
        print(fmt.format(*[str(c) for c in row]))


# -- timing and memory -------------------------------------------------------


def time_call(fn, repeats=5, warmup=1, min_time=0.0, best=False):
    """Median (or with `best`, minimum) wall time of `fn()` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 100:
            break
    times.sort()
    return times[0] if best else times[len(times) // 2]


def _status_kb(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss():
    """Resets the kernel's peak-RSS counter; True if that worked."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def rss_mb():
    try:
        return _status_kb("VmRSS") / 1024
    except (OSError, KeyError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb():
    """Peak RSS since start or since the last successful `reset_peak_rss`."""
    try:
        return _status_kb("VmHWM") / 1024
    except (OSError, KeyError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- subprocesses ------------------------------------------------------------

RESULT_TAG = "@@RESULT@@"


def emit(result):
    """Worker side: prints a JSON result the parent can find."""
    print(RESULT_TAG + json.dumps(result), flush=True)


def _child_rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_worker(args, backend=None, timeout=None, extra_env=None, max_rss_gb=None):
    """Runs `python args...` and returns `(results, error)`.

    `results` is the list of dicts the worker `emit`ted. `error` is None,
    "timeout", "exceeded N GB" (the parent kills a worker whose RSS passes
    `max_rss_gb`, so a configuration that does not fit cannot take the shared
    machine down) or the reason and tail of stderr.
    """
    import tempfile
    import threading

    env = dict(os.environ)
    if backend:
        env["KERAS_BACKEND"] = backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra_env or {})
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, *args], env=env, stdout=out, stderr=err, text=True
        )
        state = {"reason": None, "peak": 0.0}

        def watch():
            while proc.poll() is None:
                rss = _child_rss_mb(proc.pid)
                state["peak"] = max(state["peak"], rss)
                if max_rss_gb and rss > max_rss_gb * 1024:
                    state["reason"] = f"exceeded {max_rss_gb:g} GB RSS (killed)"
                    proc.kill()
                    return
                time.sleep(0.1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            state["reason"] = f"timeout after {timeout} s (killed)"
        watcher.join()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    results = _parse(stdout)
    if state["reason"]:
        return results, state["reason"]
    if proc.returncode != 0:
        tail = stderr.strip().splitlines()[-3:]
        reason = f"exit {proc.returncode}"
        if proc.returncode in (-9, 137):
            reason += " (killed, probably out of memory)"
        return results, reason + ": " + " | ".join(tail)
    return results, None


def _parse(stdout):
    return [
        json.loads(line[len(RESULT_TAG) :])
        for line in stdout.splitlines()
        if line.startswith(RESULT_TAG)
    ]


def quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
