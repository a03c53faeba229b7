"""Evaluation: FVD (I3D), ΔtPSNR, PSNR/SSIM and latent-action metrics."""
