"""Multi-node ZeRO-3, proven on one machine: `launch/multinode_zero3.yaml` launched as two "machines" on
localhost (machine_rank 0 and 1, one process each, rendezvous on 127.0.0.1 at a free port) trains DPO with
the loss curve and epoch of two processes on one machine and of one process.

The two machines are two `accelerate launch ... -m alignkit train` commands started concurrently, exactly
as on two nodes (`launch/slurm_multinode.sh` runs the same command per node); `alignkit train` with the
recipe's `launch` section builds that command (checked without running it). The three multi-process runs
start together, so the test costs about one launch instead of three.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

RECIPE = "recipes/dpo_tiny.yaml"
COMMON = ["model.path=tiny:xs", "data.eval=[]", "training.max_steps=6", "training.save_strategy=steps",
          "training.logging_steps=2", "training.save_steps=6", "training.learning_rate=1e-3"]
TIMEOUT = 300  # a machine whose peer died waits for the rendezvous: never let the test hang on it


def free_ports(count: int) -> list[int]:
    """Distinct free ports (all held open until all are chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def sets(items: list[str]) -> list[str]:
    return [x for o in items for x in ("--set", o)]


def curve(out: Path) -> tuple[list[tuple[int, float]], float]:
    state = json.loads(max(out.glob("checkpoint-*/trainer_state.json")).read_text())
    return [(e["step"], e["loss"]) for e in state["log_history"] if "loss" in e], state["epoch"]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    # Its own session, so a stuck launch is ended with everything it started (and nothing else).
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def finish(procs: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    deadline = time.monotonic() + TIMEOUT
    try:
        for name, (proc, log) in procs.items():
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert code == 0, f"{name} failed ({code}):\n{log.read_text()[-3000:]}"
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_multinode_config_rendezvouses_at_the_main_process():
    """torchrun honours `--node_rank` (= machine_rank) only under the static rendezvous, with
    main_process_ip:port as the store; under c10d it numbers machines in arrival order."""
    config = yaml.safe_load(Path("launch/multinode_zero3.yaml").read_text())
    assert config["rdzv_backend"] == "static" and config["same_network"] is True
    assert config["deepspeed_config"]["deepspeed_multinode_launcher"] == "standard"  # torchrun, no pdsh/ssh
    assert config["num_machines"] == 2 and config["deepspeed_config"]["zero_stage"] == 3


def test_two_machines_give_the_one_machine_loss_curve(tmp_path):
    from alignkit.config import load_recipe
    from alignkit.engine.run import train

    # One process, global batch 16 (in this process; it also fills the reference log-prob cache the launches read).
    train(load_recipe(RECIPE, [*COMMON, f"training.output_dir={tmp_path / 'one'}", "training.per_device_train_batch_size=16"]))

    per_device = [*COMMON, "training.per_device_train_batch_size=8"]
    port, single_port = free_ports(2)

    def launch(config: str, *args: str, out: str) -> list[str]:
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, *args,
                "-m", "alignkit", "train", RECIPE, *sets([*per_device, f"training.output_dir={tmp_path / out}"])]

    machine = ["--num_machines", "2", "--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]
    procs = {
        "machine 0": launch("launch/multinode_zero3.yaml", *machine, "--machine_rank", "0", out="nodes"),
        "machine 1": launch("launch/multinode_zero3.yaml", *machine, "--machine_rank", "1", out="nodes"),
        "two processes, one machine": launch("launch/zero3.yaml", "--num_processes", "2", "--main_process_port",
                                             str(single_port), out="two"),
    }
    finish({name: (start(cmd, tmp_path / f"{i}.log"), tmp_path / f"{i}.log") for i, (name, cmd) in enumerate(procs.items())})

    one, nodes, two = curve(tmp_path / "one"), curve(tmp_path / "nodes"), curve(tmp_path / "two")
    assert [s for s, _ in one[0]] == [2, 4, 6] == [s for s, _ in nodes[0]] == [s for s, _ in two[0]]
    for (_, a), (_, b), (_, c) in zip(one[0], nodes[0], two[0]):
        assert abs(a - b) < 1e-3 and abs(b - c) < 1e-3, (one, nodes, two)
    # The same epoch: each machine took 8 different examples per step (two copies training alone on 8
    # examples each would be at half the epoch, with a different curve).
    assert one[1] == nodes[1] == two[1]
    assert abs(one[0][-1][1] - one[0][0][1]) > 1e-3  # the weights really moved
    assert (tmp_path / "nodes" / "final" / "model.safetensors").is_file()
    # machine_rank was honoured: machine 0 holds global rank 0, which alone prints the run summary.
    logs = [(tmp_path / f"{i}.log").read_text() for i in range(2)]
    assert "checkpoint: " + str(tmp_path / "nodes" / "final") in logs[0] and "checkpoint: " not in logs[1]


def test_alignkit_train_relaunches_as_one_machine_of_several():
    """`alignkit train` with the launch section below re-launches itself as `accelerate launch` with the
    multi-node config and this machine's rank and main address (the form the test above runs)."""
    from alignkit.cli import launch_command
    from alignkit.config import load_recipe

    launch = ["launch.config_file=launch/multinode_zero3.yaml", "launch.num_machines=2", "launch.num_processes=2",
              "launch.main_process_port=29555", "launch.extra_args=[--machine_rank=1, --main_process_ip=10.1.2.3]"]
    cmd = launch_command(RECIPE, load_recipe(RECIPE, launch), ["--set", "training.max_steps=6"])
    assert cmd[1:] == ["-m", "accelerate.commands.launch", "--config_file", "launch/multinode_zero3.yaml",
                       "--num_processes", "2", "--num_machines", "2", "--main_process_port", "29555",
                       "--machine_rank=1", "--main_process_ip=10.1.2.3", "-m", "alignkit", "train", RECIPE,
                       "--set", "training.max_steps=6"]
