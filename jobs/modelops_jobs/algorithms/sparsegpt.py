"""SparseGPT's layer-wise OBS solver (Frantar & Alistarh, arXiv:2301.00774).

Why a module of its own: the solver is pure linear algebra on one weight matrix and its
calibration Hessian, independent of how a model's layers are found, calibrated or
offloaded (`pruning`). It picks the mask column block by column block and updates the
surviving weights to compensate; for unstructured sparsity the per-block counts are
rounded cumulatively so that exactly round(s·numel) weights go per matrix.
"""

import torch


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    nm: tuple[int, int] | None,
    block_size: int = 128,
    damping: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned weight, keep mask) by the OBS solver; H = 2/N · Σ x xᵀ over calibration tokens."""
    w = weight.detach().float().clone()
    rows, cols = w.shape
    h = hessian.float().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h_inv = _inverse_cholesky_upper(h, damping)
    if nm is not None:
        block_size = max(nm[1], (block_size + nm[1] - 1) // nm[1] * nm[1])
    keep = torch.ones_like(w, dtype=torch.bool)
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        w_block = w[:, start:end].clone()
        h_block = h_inv[start:end, start:end]
        diag = torch.diag(h_block)
        pruned = torch.zeros_like(w_block, dtype=torch.bool)
        if nm is None:
            remove = round(sparsity * rows * end) - round(sparsity * rows * start)
            scores = w_block**2 / diag.unsqueeze(0) ** 2
            order = torch.argsort(scores.flatten(), stable=True)
            pruned.view(-1)[order[:remove]] = True
        errors = torch.zeros_like(w_block)
        for i in range(end - start):
            if nm is not None and i % nm[1] == 0:
                group = w_block[:, i : i + nm[1]] ** 2 / diag[i : i + nm[1]].unsqueeze(0) ** 2
                lowest = torch.argsort(group, dim=1, stable=True)[:, : nm[1] - nm[0]]
                pruned.scatter_(1, i + lowest, True)
            column = w_block[:, i]
            kept_or_zero = torch.where(pruned[:, i], torch.zeros_like(column), column)
            err = (column - kept_or_zero) / h_block[i, i]
            w_block[:, i:] -= err.unsqueeze(1) @ h_block[i, i:].unsqueeze(0)
            w_block[:, i] = kept_or_zero
            errors[:, i] = err
        w[:, start:end] = w_block
        w[:, end:] -= errors @ h_inv[start:end, end:]
        keep[:, start:end] = ~pruned
    return w * keep, keep


def _inverse_cholesky_upper(h: torch.Tensor, damping: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + λI)⁻¹, raising λ tenfold until H is positive definite."""
    mean_diag = torch.mean(torch.diag(h))
    eye = torch.eye(h.shape[0], device=h.device, dtype=h.dtype)
    for attempt in range(6):
        lam = damping * (10**attempt) * mean_diag
        factor, info = torch.linalg.cholesky_ex(h + lam * eye)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(factor)
            return torch.linalg.cholesky(inverse, upper=True)
    raise ValueError("SparseGPT: Hessian is not positive definite even with heavy damping")


def reconstruction_error(weight: torch.Tensor, pruned: torch.Tensor, inputs: torch.Tensor) -> float:
    """Layer-wise reconstruction error ‖X Wᵀ − X Ŵᵀ‖² / ‖X Wᵀ‖² on calibration inputs."""
    dense_out = inputs.float() @ weight.float().t()
    diff = dense_out - inputs.float() @ pruned.float().t()
    return float((diff**2).sum() / (dense_out**2).sum())
