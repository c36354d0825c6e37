"""Steering the diffusion model toward a reward: DDPO, RWR and Diffusion-DPO with LoRA (`rlft train`)."""
