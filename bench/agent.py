"""What the agent costs on a device: idle CPU of the gateway agent, and the camera pipeline.

    python bench/agent.py [--seconds 30] [--skip-camera]

Gateway: starts Mosquitto on a free port, runs ``edge-agent run`` (every
collector, 1 s sampling, 5 s batches, Home Assistant state) as its own process
and reads that process's CPU time over a measured window after a warm-up.
Baseline in the same run: a minimal hand-written agent (psutil + paho,
compact JSON, one publish a second) measured the same way. Target: the agent
under 2% of one core at a 1 s interval.

Camera (when the ``[camera]`` extra is installed): the camera pipeline on a
synthetic video file with the default detector, printing frames/s, inference
ms per frame, and the per-frame overhead beyond inference (target under 2 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.mosquitto import start_mosquitto, stop  # noqa: E402
from bench.results import record  # noqa: E402

MINIMAL_AGENT = textwrap.dedent("""
    import json, sys, time, psutil
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    port = int(sys.argv[1])
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="baseline")
    c.connect("127.0.0.1", port)
    c.loop_start()
    psutil.cpu_percent()
    while True:
        vm = psutil.virtual_memory()
        sample = {"ts": int(time.time() * 1000), "cpu": psutil.cpu_percent(),
                  "load1": psutil.getloadavg()[0], "mem": vm.percent,
                  "disk": psutil.disk_usage("/").percent}
        c.publish("baseline/gw/metrics", json.dumps(sample, separators=(",", ":")), qos=1)
        time.sleep(1.0)
""")


def cpu_percent_of(proc: subprocess.Popen[bytes], warmup: float, seconds: float) -> float:
    """CPU of ``proc`` (and its threads) as % of one core over ``seconds`` after ``warmup``."""
    time.sleep(warmup)
    p = psutil.Process(proc.pid)
    t0, c0 = time.monotonic(), sum(p.cpu_times()[:2])
    time.sleep(seconds)
    t1, c1 = time.monotonic(), sum(p.cpu_times()[:2])
    if proc.poll() is not None:
        raise SystemExit(f"process {proc.args} exited early with {proc.returncode}")
    return 100 * (c1 - c0) / (t1 - t0)


def bench_gateway(seconds: float, workdir: Path, port: int) -> None:
    config = workdir / "agent.toml"
    config.write_text(f"""
[device]
id = "bench-gw"
data_dir = "{workdir / 'agent'}"
[broker]
port = {port}
[metrics]
interval = 1.0
batch_interval = 5.0
""")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    agent = subprocess.Popen([sys.executable, "-m", "agents.cli", "--log-level", "WARNING", "run",
                              "--config", str(config)], env=env, stdout=subprocess.DEVNULL)
    baseline = subprocess.Popen([sys.executable, "-c", MINIMAL_AGENT, str(port)], env=env)
    try:
        # Measured one after the other so they do not share the window's noise unevenly.
        agent_cpu = cpu_percent_of(agent, 5.0, seconds)
        base_cpu = cpu_percent_of(baseline, 0.0, seconds)
    finally:
        stop(agent)
        stop(baseline)
    print(f"gateway agent, every collector, 1 s sampling: {agent_cpu:6.2f} % of one core "
          f"over {seconds:g} s")
    print(f"baseline minimal paho+psutil+JSON loop:        {base_cpu:6.2f} % of one core")
    print(f"ratio agent / baseline: {agent_cpu / base_cpu:.2f}" if base_cpu > 0 else
          "ratio: baseline used no measurable CPU")
    verdict = "PASS" if agent_cpu < 2.0 else "MISS"
    print(f"{verdict}  idle CPU {agent_cpu:.2f} % (target < 2 % of one core at a 1 s interval)")
    record("gateway agent idle CPU", agent_cpu, "% of a core", baseline="minimal paho+psutil loop",
           baseline_value=base_cpu, target="< 2 %", ok=agent_cpu < 2.0)


def bench_camera(workdir: Path, port: int) -> None:
    try:
        from bench.camera_pipeline import run_camera_bench
    except ImportError as exc:
        print(f"camera: skipped ({exc}; pip install 'edgebus[camera]')")
        return
    run_camera_bench(workdir, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window (default 30)")
    parser.add_argument("--skip-camera", action="store_true")
    args = parser.parse_args()
    print(json.dumps({"python": sys.version.split()[0], "cpus": os.cpu_count()}))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker, port = start_mosquitto(workdir)
        try:
            bench_gateway(args.seconds, workdir, port)
            if not args.skip_camera:
                bench_camera(workdir, port)
        finally:
            stop(broker)


if __name__ == "__main__":
    main()
