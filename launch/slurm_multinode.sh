#!/usr/bin/env bash
# Example: 2 nodes x 8 GPUs, ZeRO-3. Submit with `sbatch launch/slurm_multinode.sh recipes/cut_llama13b.yaml`.
#SBATCH --job-name=alignkit
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
set -euo pipefail
RECIPE=${1:?usage: sbatch launch/slurm_multinode.sh RECIPE}
MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun bash -c "accelerate launch --config_file launch/multinode_zero3.yaml \
  --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * 8)) \
  --machine_rank \$SLURM_NODEID --main_process_ip $MAIN_IP --main_process_port 29500 \
  -m alignkit train $RECIPE"
