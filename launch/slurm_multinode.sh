#!/usr/bin/env bash
# Multi-node ZeRO-3 under SLURM: one `accelerate launch` per node, all naming the first node as the main
# process. Submit with `sbatch launch/slurm_multinode.sh recipes/cut_llama13b.yaml [--set key=value ...]`.
# The same variables drive a run without SLURM: start the command at the bottom once per machine with
# MACHINE_RANK=0..NNODES-1 and the same MASTER_ADDR/MASTER_PORT (tests/test_multinode.py does exactly that
# with two "machines" on 127.0.0.1 and gets the loss curve of one machine).
#SBATCH --job-name=alignkit
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one launcher per node; it starts GPUS_PER_NODE processes
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
set -euo pipefail
RECIPE=${1:?usage: sbatch launch/slurm_multinode.sh RECIPE [alignkit train options]}
shift
# NNODES        machines in the job                      (SLURM_NNODES)
# GPUS_PER_NODE processes per machine, one per GPU        (SLURM_GPUS_ON_NODE, else 8)
# MASTER_ADDR   address of machine 0, reachable from all  (first host of SLURM_JOB_NODELIST)
# MASTER_PORT   a free TCP port on machine 0              (29500; pick another if several jobs share a node)
# MACHINE_RANK  this machine's rank, 0..NNODES-1          (SLURM_NODEID, read on each node inside srun)
# Global rank = MACHINE_RANK x GPUS_PER_NODE + local rank; rank 0 (on machine 0) writes the checkpoints, so
# training.output_dir, the recipe's files and ALIGNKIT_CACHE must be on a file system every node sees.
export NNODES=${NNODES:-${SLURM_NNODES:-2}}
export GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
export MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
export MASTER_PORT=${MASTER_PORT:-29500}
ARGS=$(printf ' %q' "$@")
# shellcheck disable=SC2016  # MACHINE_RANK must expand on each node, not here
srun --ntasks-per-node=1 bash -c 'MACHINE_RANK=${MACHINE_RANK:-$SLURM_NODEID}
  exec accelerate launch --config_file launch/multinode_zero3.yaml \
    --num_machines "$NNODES" --num_processes $((NNODES * GPUS_PER_NODE)) \
    --machine_rank "$MACHINE_RANK" --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" \
    -m alignkit train '"$(printf %q "$RECIPE")$ARGS"
