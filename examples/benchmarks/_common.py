"""Shared helpers of the benchmark scripts (not a test suite).

- `add_output_arguments(parser, section)`: the options every script has
  (`--section`, `--results`, `--doc`, `--no-doc`, `--report-only`).
- `Results`: a section's measurements, kept in one JSON file,
  `examples/benchmarks/results/<section>.json` (committed data): the machine
  record, the commands that measured them, the settings the section's text
  quotes, and one record per measured configuration. A run merges the
  configurations it re-measures into the file and saves it after each one;
  the section of `docs/benchmarks.md` is rendered from the file, and
  `--report-only` renders it again without measuring.
- `run_worker(args)`: runs a measurement in a fresh process. The worker
  writes what it measured to the JSON file named by `--result PATH`
  (`write_json`, after each phase, so a killed worker still leaves what it
  measured); the parent kills it past a memory limit or a timeout.
- `machine_info()` / `machine_block()`: what the numbers were measured on.
- `update_section(name, text)`: rewrites the part of `docs/benchmarks.md`
  between `<!-- name:start -->` and `<!-- name:end -->` (appending the section
  when missing, creating the file with a short header when missing).
- timing (`time_call`), memory (`rss_mb`, `PeakRSS`, `device_memory_mb`) and
  formatting (`format_seconds`, `markdown_table`, `print_table`).

Memory is read with psutil. A phase's peak RSS is sampled (`PeakRSS`, every
`PEAK_INTERVAL_S` seconds in a thread), so a spike shorter than that can be
missed.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
RESULTS = os.path.join(HERE, "results")
PEAK_INTERVAL_S = 0.005
PEAK_TEXT = (
    "peak RSS sampled every 5 ms with psutil, so a spike shorter than that can "
    "be missed"
)

HEADER = """# Benchmarks

Measured by the scripts in `examples/benchmarks/` (they are not tests). Each
section below is rendered by the script named in it from its measurements in
`examples/benchmarks/results/<section>.json`; `--report-only` renders it again
without measuring.
"""


# -- machine ---------------------------------------------------------------


def _cpuinfo(field):
    """The first `field: value` of Linux `/proc/cpuinfo` (psutil has neither
    the CPU model nor its flags), or None."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model():
    return _cpuinfo("model name") or platform.processor() or "unknown"


# The CPU features that decide which kernels oneDNN, XLA and ATen pick.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def cpu_flags():
    """Which of `CPU_FLAGS` this CPU has (Linux only), or None."""
    flags = _cpuinfo("flags")
    if flags is None:
        return None
    present = set(flags.split())
    return [flag for flag in CPU_FLAGS if flag in present]


BACKENDS = ("tensorflow", "jax", "torch")
# REINFORCE's default entropy weight until 2026-12-07 (the reference
# notebook's; 0.01 since). Benchmark variants that train with REINFORCE
# without naming a weight pass it, so their recorded rows keep their meaning.
OLD_REINFORCE_ENTROPY_WEIGHT = 0.05


def rank(value, order):
    """Position of `value` in `order` (after all of them if absent), to sort rows."""
    return order.index(value) if value in order else len(order)


def usable_cores():
    try:
        return len(psutil.Process().cpu_affinity())
    except (AttributeError, psutil.Error):  # no cpu_affinity on macOS
        return psutil.cpu_count()


def package_version(backend):
    """Installed version of a backend's package, without importing it."""
    names = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "jax": ("jax",)}
    for name in names.get(backend, (backend,)):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def accelerator():
    """Name and memory of the first NVIDIA GPU, or None (from `nvidia-smi`)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0].strip() if out else None


def machine_info(backends):
    """Dict describing the machine and the software versions."""
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": usable_cores(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "keras": package_version("keras"),
        "backends": {b: package_version(b) for b in backends},
        "date": datetime.date.today().isoformat(),
        "accelerator": accelerator(),
    }


def machine_block(info):
    """Markdown line describing a `machine_info()` record."""
    versions = ", ".join(f"{k} {v}" for k, v in info["backends"].items())
    host = f"{info['cpu']} ({info['cores']} cores, {info['memory_gb']} GB RAM"
    if info.get("cpu_flags") is not None:
        host += ", " + (" ".join(info["cpu_flags"]) or "no AVX2")
    # Whether anything else ran is not known from here; each command's
    # line gives how busy the CPU was as it began (`Results.command_text`).
    where = (
        f"{info['accelerator']}, host {host})"
        if info.get("accelerator")
        else f"{host})"
    )
    return (
        f"*Measured {info['date']} on {where}, python {info['python']}, "
        f"keras {info['keras']}, {versions}.*"
    )


# -- results ---------------------------------------------------------------


def add_output_arguments(parser, section):
    """The options of every script: where results and docs go."""
    parser.add_argument(
        "--section",
        default=section,
        help=f"section of the doc to rewrite and name of its results file "
        f"(default {section}; e.g. {section}-gpu for a GPU run)",
    )
    parser.add_argument(
        "--results",
        help="results JSON to merge into and render from "
        "(default examples/benchmarks/results/SECTION.json)",
    )
    parser.add_argument("--doc", default=DOC, help="markdown file to rewrite")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite the doc")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="render the section from the results file, without measuring",
    )


def add_resume_argument(parser):
    parser.add_argument(
        "--resume", action="store_true", help="skip runs already recorded"
    )


def add_title_argument(parser):
    """`--title`, for a section of another setting or machine than the
    script's own (see `section_title`)."""
    parser.add_argument(
        "--title",
        help="title of the doc section, kept in the results file for later "
        "renders (default: the script's own)",
    )


def section_title(results, args, default):
    """The section's title: `--title`, kept in the results file so that a
    later `--report-only` renders it again; else the one kept; else
    `default`."""
    if args.title:
        results.settings["title"] = args.title
        results.save()
    return results.settings.get("title", default)


def write_json(path, data):
    """Writes `data` to `path` atomically (a killed writer leaves the old file)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False) as handle:
        json.dump(data, handle, indent=1)
        handle.write("\n")
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, path)


class Results:
    """The measurements of one docs section, in one JSON file.

    `records` holds one dict per measured configuration; `key` names the
    fields that identify a configuration, so a re-measured one replaces its
    old record. `settings` holds what the section's text quotes (repeats,
    views, ...): the settings of the latest measuring run. `machine` is the
    machine of the latest measuring run; a file holds one machine's numbers,
    so measuring on another machine needs another `--section` or `--results`.
    """

    def __init__(self, args, key):
        self.key = key
        self.section = args.section
        self.path = args.results or os.path.join(RESULTS, f"{args.section}.json")
        data = {}
        if os.path.exists(self.path):
            with open(self.path) as handle:
                data = json.load(handle)
        elif args.report_only:
            raise SystemExit(f"--report-only: no results file {self.path}")
        self.machine = data.get("machine")
        self.commands = data.get("commands", [])
        self.settings = data.get("settings", {})
        self.records = data.get("records", [])

    def start(self, backends, settings, same=()):
        """Before measuring: records this run's machine, command and settings.

        `same` names the settings that every record of the file must share
        (those that make records comparable): a run with other values stops.
        """
        machine = machine_info(backends)
        for name in same:
            if self.records and self.settings.get(name) != settings[name]:
                raise SystemExit(
                    f"{self.path} holds numbers measured with {name}="
                    f"{self.settings.get(name)!r}, not {settings[name]!r}; pass "
                    "another --section or --results."
                )
        if self.records and self.machine:
            for field in ("cpu", "cpu_flags", "cores", "accelerator"):
                # Files saved before the flags were recorded have none.
                if field not in self.machine:
                    continue
                if machine[field] != self.machine[field]:
                    raise SystemExit(
                        f"{self.path} holds numbers measured on another machine "
                        f"({field}: {self.machine[field]!r}, here "
                        f"{machine[field]!r}); pass another --section or --results."
                    )
            # Versions of backends measured before and not now stay recorded.
            machine["backends"] = {**self.machine["backends"], **machine["backends"]}
        self.machine = machine
        argv = [os.path.relpath(os.path.abspath(sys.argv[0]), ROOT), *sys.argv[1:]]
        self.commands.append(
            {
                "date": machine["date"],
                "command": "python " + shlex.join(argv),
                # What else was running as it began: the share of all cores
                # busy over one second before this script's own work.
                "busy_percent": psutil.cpu_percent(interval=1.0),
            }
        )
        self.settings = dict(self.settings, **settings)
        self.save()

    def add(self, record):
        """Adds (or replaces) the record of one configuration and saves."""
        ident = tuple(record.get(k) for k in self.key)
        self.records = [
            r for r in self.records if tuple(r.get(k) for k in self.key) != ident
        ]
        self.records.append(record)
        self.save()

    def save(self):
        write_json(
            self.path,
            {
                "section": self.section,
                "machine": self.machine,
                "commands": self.commands,
                "settings": self.settings,
                "records": self.records,
            },
        )

    def command_text(self):
        """`Command: ...` line(s) for the section, each with how busy the
        machine was as it began."""

        def busy(command):  # commands recorded before 2026-12-06 have none
            if command.get("busy_percent") is None:
                return ""
            return f" (CPU {command['busy_percent']:.0f}% busy at the start)"

        if len(self.commands) == 1:
            return f"Command: `{self.commands[0]['command']}`{busy(self.commands[0])}"
        lines = ["Commands (merged into one results file, in order):", ""]
        lines += [f"- {c['date']}: `{c['command']}`{busy(c)}" for c in self.commands]
        return "\n".join(lines)


# -- docs/benchmarks.md ------------------------------------------------------


def update_section(name, text, path=DOC):
    """Replaces the text between the `name` markers of `path`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if os.path.exists(path):
        with open(path) as handle:
            document = handle.read()
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        document = HEADER
    block = f"{start}\n{text.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(document):
        document = pattern.sub(lambda _: block, document)
    else:
        document = document.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as handle:
        handle.write(document)
    print("rewrote section", name, "of", path)
    return path


def format_seconds(value):
    """`1.84 ms` below 0.1 s (GPU steps keep three digits), else `0.154 s`."""
    if value is None:
        return "–"
    if value < 0.1:
        return f"{value * 1e3:.2f} ms"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def write_section(args, results, title, description, header, rows, notes=()):
    """Rewrites the script's section of the docs (unless `--no-doc`): the
    title, the machine, the description, the commands, the table and the
    notes as a list."""
    if args.no_doc:
        return
    parts = [f"## {title}", "", machine_block(results.machine), "", description]
    parts += ["", results.command_text(), "", markdown_table(header, rows)]
    if notes:
        parts += ["", *[f"- {line}" for line in notes]]
    update_section(args.section, "\n".join(parts), args.doc)


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


def rss_mb():
    return psutil.Process().memory_info().rss / 2**20


class PeakRSS:
    """Samples this process's RSS in a thread while the `with` block runs.

    `peak_mb` is the largest sample so far (readable inside the block, to
    take the peak of a first phase, and after it).

    Examples:
        >>> with PeakRSS() as peak:
        ...     data = bytearray(50 * 2**20)
        >>> peak.peak_mb >= 50
        True
    """

    def __init__(self, interval=PEAK_INTERVAL_S):
        self.interval = interval
        self._process = psutil.Process()
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while True:
            self._peak = max(self._peak, self._process.memory_info().rss)
            if self._stop.wait(self.interval):
                return

    @property
    def peak_mb(self):
        return max(self._peak, self._process.memory_info().rss) / 2**20

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)


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


# -- models shared by the scripts ---------------------------------------------


def cnn_baseline(image_shape, num_classes, scale=None, metrics=None):
    """The CNN baselines: the reference notebook's patch CNN on whole images.

    `kas.patch_backbone()` (4 x Conv2D 3x3 16 leaky ReLU + GlobalMaxPool) and
    a softmax Dense layer, on `uint8` images normalised as the attention
    model normalises them (`Rescaling(1 / 255, offset=-0.5)`); with `scale`,
    on the view `kas.Downsample(scale)` makes (the attention model's own
    pass). Compiled with Adam (1e-3) and sparse categorical cross-entropy.
    """
    import keras

    import keras_attention_sampling as kas

    inputs = keras.Input(image_shape, dtype="uint8")
    x = inputs
    if scale:
        x = kas.Downsample(scale, name="downsample")(x)
    x = keras.layers.Rescaling(1 / 255, offset=-0.5)(x)
    x = kas.patch_backbone()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=metrics
    )
    return model


# -- subprocesses ------------------------------------------------------------


def digit_backbone():
    """A patch backbone that sees shapes, not only textures: Conv 32, max-pool,
    Conv 64, max-pool, Conv 64, global max-pool. The digit benchmarks give it
    to every variant (the reference notebook's backbone, 4 x Conv 16 with a
    9-pixel receptive field, cannot read a 28-pixel digit)."""
    import keras

    return keras.Sequential(
        [
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.GlobalMaxPooling2D(),
        ],
        name="digit_backbone",
    )


def fading(weight, steps):
    """An entropy weight that decays linearly from `weight` to 0 over the
    first half of a run of `steps` attention-optimiser steps, then stays 0:
    the map keeps exploring while the features learn what to look for, and
    the second half trains on the estimator alone."""
    import keras

    return keras.optimizers.schedules.PolynomialDecay(weight, max(steps // 2, 1), 0.0)


def add_worker_arguments(parser, **point):
    """The hidden flags of a worker process: `--worker`, one flag per key
    of a measured point (`name=type`, e.g. `seed=int`) and `--result`."""
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name, kind in point.items():
        parser.add_argument(
            "--" + name.replace("_", "-"), type=kind, help=argparse.SUPPRESS
        )
    parser.add_argument("--result", help=argparse.SUPPRESS)


def parse_main(parser, worker, key):
    """The command line of a benchmark script. In a worker process
    (`--worker`) runs `worker(args)` and returns None; otherwise returns
    `(args, backend, results)`, the backend from `--backend` or
    KERAS_BACKEND (default tensorflow) and the script's `Results`."""
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return None
    backend = getattr(args, "backend", None) or os.environ.get(
        "KERAS_BACKEND", "tensorflow"
    )
    return args, backend, Results(args, key)


def select(records, **match):
    """The records whose fields equal `match`, and those of them measured
    (without an `error`)."""
    chosen = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    return chosen, [r for r in chosen if not r.get("error")]


def run_point(script, point, task=(), backend=None, timeout=None, max_rss_gb=None):
    """Measures one point in a fresh `script --worker` process, with the
    point's and the task's settings as flags; returns the record the worker
    wrote, or the point with the `error` (see `run_worker`)."""
    settings = {**dict(task), **point}
    command = [os.path.abspath(script), "--worker"]
    command += [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]
    record, error = run_worker(
        command, backend=backend, timeout=timeout, max_rss_gb=max_rss_gb
    )
    return {**point, "error": error} if error else record


def run_worker(args, backend=None, timeout=None, max_rss_gb=None):
    """Runs `python args... --result PATH`; returns `(result, error)`.

    `result` is the JSON the worker last wrote to PATH (None if it wrote
    nothing). `error` is None, "timeout ...", "exceeded N GB RSS (killed)"
    (the parent watches the worker's RSS with psutil and kills it past
    `max_rss_gb`, so a configuration that does not fit cannot take the
    shared machine down) or the exit status and tail of stderr. The worker's
    stdout goes to the parent's.
    """
    env = dict(os.environ)
    if backend:
        env["KERAS_BACKEND"] = backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    reason, result = None, None
    deadline = time.monotonic() + timeout if timeout else None
    with (
        tempfile.TemporaryDirectory(prefix="benchmark-") as tmp,
        tempfile.TemporaryFile("w+") as err,
    ):
        result_path = os.path.join(tmp, "result.json")
        proc = subprocess.Popen(
            [sys.executable, *args, "--result", result_path],
            env=env,
            stderr=err,
            text=True,
        )
        child = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = child.memory_info().rss
            except psutil.Error:  # exited meanwhile
                rss = 0
            if max_rss_gb and rss > max_rss_gb * 2**30:
                reason = f"exceeded {max_rss_gb:g} GB RSS (killed)"
            elif deadline and time.monotonic() > deadline:
                reason = f"timeout after {timeout} s (killed)"
            if reason:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.1)
        if os.path.exists(result_path):
            with open(result_path) as handle:
                result = json.load(handle)
        err.seek(0)
        stderr = err.read()
    if reason is None and proc.returncode != 0:
        tail = stderr.strip().splitlines()[-3:]
        reason = f"exit {proc.returncode}"
        if proc.returncode in (-9, 137):
            reason += " (killed, probably out of memory)"
        reason += ": " + " | ".join(tail)
    return result, reason
