"""Sparse autoencoders (SAEs) over a layer's activations: their latents are components too.

SemanticLens applies to any component, and reports its labels on vanilla (ReLU) and TopK SAE
latents (label AUC 0.94 for TopK latents). :class:`SAE` is a plain ``nn.Module``::

    z     = act((x - b_dec) @ W_enc + b_enc)          # encode: [N, d] -> [N, n_latents]
    x_hat = z @ W_dec + b_dec                         # decode: [N, n_latents] -> [N, d]

with ``act`` a ReLU (vanilla SAE) or TopK (keep the k largest pre-activations per vector, then
ReLU; Gao et al. 2024, "Scaling and evaluating sparse autoencoders"). Conv maps are encoded at
every spatial position (``[B, d, H, W] -> [B, n_latents, H, W]``), token maps per token
(``[B, T, d] -> [B, T, n_latents]``). :meth:`SAE.fit` trains one; :meth:`SAE.save` /
:meth:`SAE.load` use safetensors (no pickle).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["SAE", "ACTIVATIONS"]

ACTIVATIONS = ("relu", "topk")
_FORMAT = "semlens-sae"
_VERSION = "1"
#: version of the relevance rules of :meth:`SAE.input_relevance` / :meth:`SAE.latent_relevance`
_RULES_VERSION = "encoder-epsilon-centred/decoder-share 1"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _tensor(name: str, v: Any) -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if not v.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {v.dtype}")
    return v.detach().float().clone()


class SAE(nn.Module):
    """A sparse autoencoder over ``d``-dimensional activations with ``n_latents`` latents.

    W_enc: [d, n_latents]; b_enc: [n_latents]; W_dec: [n_latents, d] (None: ``W_enc.T``, a tied
    decoder); b_dec: [d] (None: zeros), subtracted before encoding and added after decoding.
    activation: ``"relu"`` (vanilla SAE) or ``"topk"`` (TopK SAE; ``k`` latents per vector,
    1 <= k <= n_latents). ``forward`` is :meth:`encode`.
    """

    def __init__(
        self,
        W_enc: torch.Tensor,
        b_enc: torch.Tensor,
        W_dec: torch.Tensor | None = None,
        b_dec: torch.Tensor | None = None,
        activation: str = "relu",
        k: int | None = None,
    ):
        super().__init__()
        W_enc = _tensor("W_enc", W_enc)
        if W_enc.ndim != 2 or min(W_enc.shape) < 1:
            raise ValueError(f"W_enc must be [d, n_latents], got shape {tuple(W_enc.shape)}")
        d, n = W_enc.shape
        b_enc = _tensor("b_enc", b_enc)
        if tuple(b_enc.shape) != (n,):
            raise ValueError(f"b_enc must be [n_latents={n}] to match W_enc [d={d}, n_latents={n}], got {tuple(b_enc.shape)}")
        W_dec = W_enc.T.clone() if W_dec is None else _tensor("W_dec", W_dec)
        if tuple(W_dec.shape) != (n, d):
            raise ValueError(f"W_dec must be [n_latents={n}, d={d}] to match W_enc [d, n_latents], got {tuple(W_dec.shape)}")
        b_dec = torch.zeros(d) if b_dec is None else _tensor("b_dec", b_dec)
        if tuple(b_dec.shape) != (d,):
            raise ValueError(f"b_dec must be [d={d}], got {tuple(b_dec.shape)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {list(ACTIVATIONS)}")
        if activation == "topk":
            if not _is_int(k) or not 1 <= k <= n:
                raise ValueError(f"activation='topk' needs an int k with 1 <= k <= n_latents={n}, got {k!r}")
        elif k is not None:
            raise ValueError(f"k={k!r} is only meaningful with activation='topk'; pass k=None for 'relu'")
        self.W_enc = nn.Parameter(W_enc)
        self.b_enc = nn.Parameter(b_enc)
        self.W_dec = nn.Parameter(W_dec)
        self.b_dec = nn.Parameter(b_dec)
        self.activation = activation
        self.k = None if k is None else int(k)
        self.fit_info: dict = {}

    @property
    def d(self) -> int:
        """Input dimension (channels of the layer)."""
        return int(self.W_enc.shape[0])

    @property
    def n_latents(self) -> int:
        return int(self.W_enc.shape[1])

    def extra_repr(self) -> str:
        k = f", k={self.k}" if self.k is not None else ""
        return f"d={self.d}, n_latents={self.n_latents}, activation={self.activation!r}{k}"

    # ---- layouts ------------------------------------------------------------------------------
    def _to_rows(self, x: torch.Tensor, width: int, what: str) -> tuple[torch.Tensor, Any]:
        """[N, w] / [B, w, H, W] / [B, T, w] -> ([M, w], how to restore)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 2 and x.shape[1] == width:
            return x, ("rows",)
        if x.ndim == 4 and x.shape[1] == width:
            b, _, h, w = x.shape
            return x.permute(0, 2, 3, 1).reshape(-1, width), ("conv", b, h, w)
        if x.ndim == 3 and x.shape[2] == width:
            b, t, _ = x.shape
            return x.reshape(-1, width), ("tokens", b, t)
        raise ValueError(
            f"{what} must be [N, {width}], conv maps [B, {width}, H, W] or tokens [B, T, {width}]; "
            f"got shape {tuple(x.shape)}"
        )

    @staticmethod
    def _from_rows(y: torch.Tensor, how: Any) -> torch.Tensor:
        if how[0] == "rows":
            return y
        if how[0] == "conv":
            _, b, h, w = how
            return y.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        _, b, t = how
        return y.reshape(b, t, -1)

    # ---- the model ----------------------------------------------------------------------------
    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - b_dec) @ W_enc + b_enc``: x [M, d] -> [M, n_latents]."""
        return (x.to(self.W_enc.dtype) - self.b_dec) @ self.W_enc + self.b_enc

    def _act(self, pre: torch.Tensor) -> torch.Tensor:
        if self.activation == "relu":
            return torch.relu(pre)
        v, i = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, i, torch.relu(v))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents: x [N, d] -> [N, n_latents]; conv maps [B, d, H, W] -> [B, n_latents, H, W]
        (every spatial position); tokens [B, T, d] -> [B, T, n_latents]."""
        rows, how = self._to_rows(x, self.d, "x")
        return self._from_rows(self._act(self.pre_activations(rows)), how)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``z @ W_dec + b_dec``: z [N, n_latents] -> [N, d] (conv / token layouts
        as in :meth:`encode`)."""
        rows, how = self._to_rows(z, self.n_latents, "z")
        return self._from_rows(rows.to(self.W_dec.dtype) @ self.W_dec + self.b_dec, how)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)

    # ---- identity and relevance (an SAE layer of a Lens) ----------------------------------------
    @property
    def identity(self) -> dict:
        """What a Lens fingerprints of this SAE: ``activation, k, d, n_latents`` and ``weights``
        (sha256 of the four weight tensors), plus the version of the relevance rules below. Any
        change of the weights changes it, so every stored result of an SAE layer is recomputed."""
        import hashlib

        from semlens_widgets.store import tensor_digest

        h = hashlib.sha256()
        for p in (self.W_enc, self.b_enc, self.W_dec, self.b_dec):
            h.update(tensor_digest(p.detach().float().cpu()).encode())
        return {"activation": self.activation, "k": self.k, "d": self.d, "n_latents": self.n_latents,
                "weights": h.hexdigest(), "rules": _RULES_VERSION}

    @torch.no_grad()
    def input_relevance(self, x: torch.Tensor, relevance: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """LRP through the encoder: relevance of the latents -> relevance of the SAE's input.

        The epsilon rule on the encoder's linear map, with contributions measured from the SAE's
        own reference point ``b_dec`` (encode subtracts it) and the bias left out (as the Lens's
        default LRP rules do, so relevance is conserved):
        ``R_x[i] = sum_j (x_i - b_dec_i) W_enc[i, j] / (s_j + eps sign(s_j)) R_z[j]`` with
        ``s_j = sum_i (x_i - b_dec_i) W_enc[i, j]``, per vector (per position of conv maps).
        This is how a CRP crop of a latent starts: the latent's start relevance (its activation
        at the peak position) is moved onto the layer below the SAE, then propagated to the
        input by the model's LRP rules.

        x: the layer's output ``[N, d]``, ``[B, d, H, W]`` or ``[B, T, d]``; relevance: the
        latents' relevance in the matching layout (``[N, n_latents]`` ...). Returns ``x``'s layout.
        """
        rows, how = self._to_rows(x, self.d, "x")
        rel, _ = self._to_rows(relevance, self.n_latents, "relevance")
        c = rows.to(self.W_enc) - self.b_dec  # [M, d]
        s = c @ self.W_enc  # [M, n_latents]
        s = s + eps * torch.where(s >= 0, 1.0, -1.0)
        return self._from_rows(c * ((rel.to(s) / s) @ self.W_enc.T), how).to(x)

    @torch.no_grad()
    def latent_relevance(self, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        """Relevance of the latents for a prediction, from the relevance of the layer they read.

        The layer's output is the sum of the latents' parts, the decoder bias and the SAE's error:
        ``x_i = sum_j z_j W_dec[j, i] + b_dec_i + e_i``. Relevance ``R_x[i]`` (CRP relevance of the
        layer for a class) is shared in proportion to these parts (the LRP rule of a sum):
        ``R_z[j] = sum_i z_j W_dec[j, i] / x_i * R_x[i]``; the decoder bias and the error keep
        the rest, and positions where ``x_i = 0`` pass nothing (their relevance is 0 under
        LRP). Per vector (per position of conv maps); sum over positions for a latent's relevance.

        x, relevance: ``[N, d]``, ``[B, d, H, W]`` or ``[B, T, d]`` (same layout). Returns the
        latents' relevance ``[N, n_latents]`` / ``[B, n_latents, H, W]`` / ``[B, T, n_latents]``.
        """
        rows, how = self._to_rows(x, self.d, "x")
        rel, _ = self._to_rows(relevance, self.d, "relevance")
        rows = rows.to(self.W_enc)
        nz = rows != 0
        share = torch.where(nz, rel.to(rows) / torch.where(nz, rows, torch.ones_like(rows)), torch.zeros_like(rows))
        z = self._act(self.pre_activations(rows))  # [M, n_latents]
        return self._from_rows(z * (share @ self.W_dec.T), how).to(relevance)

    @torch.no_grad()
    def stats(self, x: torch.Tensor, batch_size: int = 65536) -> dict:
        """Reconstruction quality on activations x (any layout :meth:`encode` takes):
        ``fvu`` (fraction of variance unexplained, ``sum ||x - x_hat||^2 / sum ||x - mean x||^2``),
        ``l0`` (mean number of active latents per vector) and ``dead`` (share of latents never
        active on x)."""
        rows, _ = self._to_rows(x, self.d, "x")
        rows = rows.float()
        mean = rows.mean(0)
        err = tot = l0 = 0.0
        fired = torch.zeros(self.n_latents, dtype=torch.bool)
        for s in range(0, rows.shape[0], batch_size):
            xb = rows[s : s + batch_size].to(self.W_enc.device)
            z = self._act(self.pre_activations(xb))
            err += float(((z @ self.W_dec + self.b_dec - xb) ** 2).sum())
            tot += float(((xb - mean.to(xb.device)) ** 2).sum())
            nz = z > 0
            l0 += float(nz.sum())
            fired |= nz.any(0).cpu()
        n = max(1, rows.shape[0])
        return {"fvu": err / max(tot, 1e-12), "l0": l0 / n, "dead": float((~fired).float().mean())}

    # ---- disk -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the SAE to a safetensors file (tensors ``W_enc, b_enc, W_dec, b_dec``; metadata
        ``format, version, activation, k, fit_info``), atomically. Returns the path."""
        from safetensors.torch import save

        from semlens_widgets.store import atomic_write_bytes

        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"save to a .safetensors file, got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {n: p.detach().float().cpu().contiguous() for n, p in
                   (("W_enc", self.W_enc), ("b_enc", self.b_enc), ("W_dec", self.W_dec), ("b_dec", self.b_dec))}
        meta = {"format": _FORMAT, "version": _VERSION, "activation": self.activation,
                "k": "" if self.k is None else str(self.k), "fit_info": json.dumps(self.fit_info)}
        atomic_write_bytes(path, save(tensors, metadata=meta))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "SAE":
        """Read an SAE written by :meth:`save`."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no SAE file at {str(path)!r}")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{str(path)!r} is not an SAE written by SAE.save (format {meta.get('format')!r})")
            t = {name: f.get_tensor(name) for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
        k = int(meta["k"]) if meta.get("k") else None
        sae = cls(t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"], activation=meta["activation"], k=k)
        sae.fit_info = json.loads(meta.get("fit_info") or "{}")
        return sae.to(device)

    # ---- training -------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        data: Any,
        n_latents: int,
        activation: str = "topk",
        k: int | None = 8,
        *,
        layer: str | None = None,
        l1: float = 1.0,
        epochs: int = 8,
        batch_size: int = 4096,
        lr: float = 2e-3,
        aux_k: int | None = None,
        aux_coef: float = 1 / 32,
        dead_after: int | None = None,
        max_vectors: int = 262144,
        max_samples: int | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        progress: bool = True,
    ) -> "SAE":
        """Train an SAE on a layer's activations.

        data: activations ``[N, d]``, conv maps ``[B, d, H, W]`` (every spatial position is a
              vector: B*H*W of them) or tokens ``[B, T, d]``; or a Lens with ``layer`` (a module
              name of ``lens.model``): its model is run on ``lens.model_inputs`` of the dataset
              (the first ``max_samples``, default all) and the layer's output is used.
        n_latents: dictionary size. activation: ``"topk"`` (``k`` per vector) or ``"relu"``
              (``k`` ignored; sparsity from the L1 penalty ``l1``, in units of the normalised
              inputs: on the demo's block4, l1=1 gives about 47 active latents of 512 after 4
              epochs, l1=3 about 17).

        The recipe (Gao et al. 2024 for TopK): inputs centred at their coordinate-wise median
        and scaled to unit mean square per dimension for training (folded back into the
        weights at the end, so the SAE eats raw activations and its latents are in their
        units); decoder rows unit-norm (renormalised after every Adam step, the gradient
        component along each row removed before it), encoder initialised as the decoder's
        transpose, b_dec initialised at the median; loss ``||x - x_hat||^2`` plus, for TopK,
        the AuxK loss (``aux_coef`` x the error of reconstructing the residual from the
        ``aux_k`` largest pre-activations of dead latents, those silent for ``dead_after``
        vectors; ``aux_k=0`` switches it off), for ReLU ``l1 * sum |z|`` (Bricken et al. 2023).
        ``max_vectors`` vectors at most (a seeded random subset), ``epochs`` passes over them in
        batches of ``batch_size``. Seeded; fast rather than resumable (seconds to a minute on
        a CPU for the demo's block4: 2,000 images x 64 positions x 128 channels).

        Returns the SAE (on the CPU) with ``fit_info``: ``fvu, l0, dead`` on the training
        vectors (see :meth:`stats`), ``n_vectors, steps, seconds``.
        """
        if not _is_int(n_latents) or n_latents < 1:
            raise ValueError(f"n_latents must be an int >= 1, got {n_latents!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {list(ACTIVATIONS)}")
        if activation == "relu":
            k = None
            if not (isinstance(l1, (int, float)) and l1 >= 0):
                raise ValueError(f"l1 must be a number >= 0, got {l1!r}")
        elif not _is_int(k) or not 1 <= k <= n_latents:
            raise ValueError(f"activation='topk' needs an int k with 1 <= k <= n_latents={n_latents}, got {k!r}")
        for name, v in (("epochs", epochs), ("batch_size", batch_size), ("max_vectors", max_vectors)):
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr must be a number > 0, got {lr!r}")
        x = _training_vectors(data, layer, max_samples)  # [N, d] float32, CPU
        gen = torch.Generator().manual_seed(int(seed))
        if x.shape[0] > max_vectors:
            x = x[torch.randperm(x.shape[0], generator=gen)[:max_vectors]]
        n_vec, d = x.shape
        if n_vec < 2:
            raise ValueError(f"need at least 2 activation vectors to fit an SAE, got {n_vec}")
        t0 = time.perf_counter()
        centre = x.median(0).values
        scale = float(((x - centre) ** 2).mean().sqrt().clamp_min(1e-8))
        xn = ((x - centre) / scale).to(device)
        W_dec = torch.randn(n_latents, d, generator=gen)
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
        sae = cls(W_dec.T.clone(), torch.zeros(n_latents), W_dec, torch.zeros(d), activation=activation, k=k).to(device)
        opt = torch.optim.Adam(sae.parameters(), lr=lr)
        if aux_k is None:
            aux_k = min(n_latents, max(1, d // 2))
        if dead_after is None:
            dead_after = min(n_vec, 100_000)
        since_fired = torch.zeros(n_latents, device=device)
        steps_per_epoch = math.ceil(n_vec / batch_size)
        total = epochs * steps_per_epoch
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=f"SAE fit ({activation}, {n_latents} latents)", leave=False)
        step = 0
        with torch.enable_grad():  # trains even when called under torch.no_grad()
            step = _train_loop(sae, opt, xn, gen, epochs, batch_size, activation, l1, aux_k, aux_coef,
                               dead_after, since_fired, bar, device)
        # fold the normalisation into the weights: latents scale by `scale` (ReLU and TopK are
        # positively homogeneous), decoder rows stay unit-norm
        with torch.no_grad():
            out = cls(
                sae.W_enc.detach().cpu(),
                sae.b_enc.detach().cpu() * scale,
                sae.W_dec.detach().cpu(),
                centre + scale * sae.b_dec.detach().cpu(),
                activation=activation,
                k=k,
            )
        info = out.stats(x)
        info.update({"n_vectors": int(n_vec), "steps": int(step), "seconds": round(time.perf_counter() - t0, 2)})
        out.fit_info = info
        return out


def _train_loop(sae, opt, xn, gen, epochs, batch_size, activation, l1, aux_k, aux_coef, dead_after, since_fired,
                bar, device) -> int:
    """The optimisation of :meth:`SAE.fit` on normalised vectors ``xn [N, d]``; returns the steps."""
    n_vec, d = xn.shape
    step = 0
    try:
        for _ in range(epochs):
            order = torch.randperm(n_vec, generator=gen).to(device)
            for s in range(0, n_vec, batch_size):
                xb = xn[order[s : s + batch_size]]
                pre = sae.pre_activations(xb)
                z = sae._act(pre)
                recon = z @ sae.W_dec + sae.b_dec
                err = xb - recon
                loss = (err**2).sum(1).mean()
                fired = (z > 0).any(0)
                since_fired += xb.shape[0]
                since_fired[fired] = 0
                if activation == "relu":
                    loss = loss + l1 * z.abs().sum(1).mean()
                elif aux_k > 0 and aux_coef > 0:
                    dead = since_fired >= dead_after
                    n_dead = int(dead.sum())
                    if n_dead:
                        ka = min(aux_k, n_dead)
                        masked = pre.masked_fill(~dead, float("-inf"))
                        v, i = masked.topk(ka, dim=1)
                        za = torch.zeros_like(pre).scatter(1, i, torch.relu(v))
                        e = err.detach()
                        aux = ((e - za @ sae.W_dec) ** 2).sum(1).mean()
                        loss = loss + aux_coef * aux
                opt.zero_grad(set_to_none=True)
                loss.backward()
                with torch.no_grad():  # keep decoder rows on the unit sphere
                    g, w = sae.W_dec.grad, sae.W_dec
                    g -= (g * w).sum(1, keepdim=True) * w
                opt.step()
                with torch.no_grad():
                    sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
                step += 1
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0:
                        bar.set_postfix(loss=f"{float(loss) / d:.3f}")
    finally:
        if bar is not None:
            bar.close()
    return step


@torch.no_grad()
def _training_vectors(data: Any, layer: str | None, max_samples: int | None) -> torch.Tensor:
    """Activation vectors [N, d] (float32, CPU) from a tensor or from a Lens + layer."""
    if isinstance(data, torch.Tensor):
        if layer is not None:
            raise ValueError("layer is only used with a Lens; pass activations or (lens, layer=...)")
        if not data.is_floating_point():
            raise TypeError(f"activations must be floating point, got dtype {data.dtype}")
        if data.ndim == 2:
            x = data
        elif data.ndim == 4:
            x = data.permute(0, 2, 3, 1).reshape(-1, data.shape[1])
        elif data.ndim == 3:
            x = data.reshape(-1, data.shape[2])
        else:
            raise ValueError(
                f"activations must be [N, d], conv maps [B, d, H, W] or tokens [B, T, d]; got shape {tuple(data.shape)}"
            )
        x = x.detach().float().cpu()
        if not torch.isfinite(x).all():
            raise ValueError("activations contain NaN or infinite values")
        return x
    model = getattr(data, "model", None)
    if model is None or not hasattr(data, "model_inputs"):
        raise TypeError(
            f"SAE.fit takes activations (a Tensor [N, d], [B, d, H, W] or [B, T, d]) or a Lens with "
            f"layer=...; got {type(data).__name__}"
        )
    from semlens_widgets.kernels.hooks import LayerCapture, parse_layer

    modules = dict(model.named_modules())
    if not isinstance(layer, str) or parse_layer(layer).sae or parse_layer(layer).module not in modules or not layer:
        raise ValueError(
            f"layer must name a module of the lens's model ('name', 'name@i' or 'name[j]' as in Lens layers), "
            f"got {layer!r}; e.g. one of {list(modules)[1:8]}"
        )
    n = len(data.dataset) if max_samples is None else min(int(max_samples), len(data.dataset))
    if n < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples!r}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    chunks: list[torch.Tensor] = []
    bs = int(getattr(data, "batch_size", 64))
    was_training = model.training
    model.eval()
    try:
        with LayerCapture(model, [layer]) as cap:
            for s in range(0, n, bs):
                cap.reset()
                model(data.model_inputs(list(range(s, min(n, s + bs)))).to(device))
                cap.check()
                chunks.append(cap.outputs[layer].float().cpu())
    finally:
        model.train(was_training)
    return _training_vectors(torch.cat(chunks), None, None)
