"""Memory of one rank's MaxSim forward + backward against the documents gathered from every rank
(README, "Training across GPUs"): the einsum reference and kdops on padded documents, and kdops
on packed ones. Peak memory by benchmarks.harness.peak_bytes (the documents' gradient, as large
as the documents, included). Run: python -m benchmarks.distributed_memory [--device cuda]"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import kdops
from benchmarks.harness import peak_bytes

RANKS, QUERIES, DOCS_PER_QUERY, LQ, LD_MAX, DIM = 8, 32, 2, 32, 300, 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    device = torch.device(parser.parse_args().device)
    g = torch.Generator().manual_seed(0)
    n = RANKS * QUERIES * DOCS_PER_QUERY
    lengths = torch.randint(20, 181, (n,), generator=g)
    lengths[0] = LD_MAX
    Q = torch.randn(QUERIES, LQ, DIM, generator=g).to(device).requires_grad_()
    D = torch.randn(n, LD_MAX, DIM, generator=g).to(device)
    mask = (torch.arange(LD_MAX)[None] < lengths[:, None]).to(device)
    tokens = D[mask].requires_grad_()
    offsets = F.pad(lengths.cumsum(0), (1, 0)).to(device)
    D.requires_grad_()
    kdops.maxsim(Q[:1, :1].detach(), D[:1, :1].detach())  # load the op outside the measurement

    cases = {
        "einsum (kdops.reference.maxsim), padded": (D, lambda: kdops.reference.maxsim(Q, D, None, mask)),
        "kdops.maxsim, padded": (D, lambda: kdops.maxsim(Q, D, None, mask)),
        "kdops.maxsim_packed": (tokens, lambda: kdops.maxsim_packed(Q, tokens, offsets)),
    }
    print(f"{device}: {n} docs ({RANKS} ranks x {QUERIES} queries x {DOCS_PER_QUERY}), Lq {LQ}, "
          f"Ld {int(lengths.min())}..{LD_MAX} (mean {lengths.float().mean():.1f}), d {DIM}, float32")
    for name, (docs, score) in cases.items():
        Q.grad = docs.grad = None

        def step(docs=docs, score=score):
            score().sum().backward()
            return Q.grad, docs.grad

        held = docs.numel() * docs.element_size()
        print(f"{name:42s} documents {held / 2**20:6.0f} MiB  peak fwd+bwd {peak_bytes(step, device) / 2**20:6.0f} MiB")


if __name__ == "__main__":
    main()
