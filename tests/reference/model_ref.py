"""A plain PyTorch reference of Shoestring's DeepSeek-V3-style model (trainer/model/).

Written from the papers, not translated from the C++: DeepSeek-V2 (arXiv 2405.04434) §2.1 for
multi-head latent attention, DeepSeek-V3 (arXiv 2412.19437) §2.1.2 for DeepSeekMoE routing and
auxiliary-loss-free balancing, eq. 17-20 for the sequence-wise balance loss, §2.2 for multi-token
prediction. Parameter names and shapes equal the C++ model's named_parameters(), so weights move
between the two by name (tests/reference/tensor_io.py).

Two implementations of the two parts where one could hide a mistake:
  variant="reference": attention as explicit masked softmax, MoE as "every expert on every token,
                       masked by routing". Obviously right, slow. What the C++ model is tested against.
  variant="eager":     attention through F.scaled_dot_product_attention, MoE by gathering each
                       expert's tokens (the loop of DeepSeek-V3's own inference/model.py). What a
                       PyTorch user would write; the peer of bench/train_vs_pytorch.py.
run_reference.py checks that both give the same losses and gradients.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelArgs:
    """The `model:` section of a Shoestring config (trainer/config.h, same names and defaults)."""
    vocab_size: int = 256
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 4
    intermediate_size: int = 384
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    init_std: float = 0.02
    attention: str = "gqa"
    q_lora_rank: int = 0
    kv_lora_rank: int = 32
    qk_nope_head_dim: int = 16
    qk_rope_head_dim: int = 8
    v_head_dim: int = 16
    n_routed_experts: int = 0
    n_shared_experts: int = 1
    n_activated_experts: int = 2
    moe_intermediate_size: int = 64
    n_dense_layers: int = 1
    n_expert_groups: int = 1
    n_limited_groups: int = 1
    route_scale: float = 1.0
    capacity_factor: float = 0.0
    mtp_depth: int = 0

    @classmethod
    def from_section(cls, values: dict[str, str]) -> "ModelArgs":
        """From the `model:` section's key -> text. A key we do not know is an error: a new C++
        model option must be added here too, or the two models would silently differ."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"model keys unknown to the reference: {unknown} (add them to model_ref.py)")
        args = cls()
        for name, text in values.items():
            kind = known[name].type
            text = text.strip().strip('"')
            if kind in ("bool", bool):
                value = text.lower() in ("true", "1", "yes", "on")
            elif kind in ("int", int):
                value = int(text)
            elif kind in ("float", float):
                value = float(text)
            else:
                value = text
            setattr(args, name, value)
        if args.capacity_factor > 0:
            raise ValueError("the reference is dropless: model.capacity_factor must be 0")
        return args


def read_resolved_config(text: str) -> dict[str, dict[str, str]]:
    """The fully resolved config as `shoestring config --print` and the C++ to_yaml() write it:
    `section:` lines, each followed by `  key: value` lines (no nesting, no multi-line values)."""
    out: dict[str, dict[str, str]] = {}
    section = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            section = line.rstrip().rstrip(":")
            out[section] = {}
        else:
            key, _, value = line.strip().partition(":")
            out[section][key.strip()] = value.strip()
    return out


def wide(x: torch.Tensor) -> torch.Tensor:
    """x in at least fp32 (fp64 stays fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def normal(*shape: int, std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * std)


class RMSNorm(nn.Module):
    """Zhang & Sennrich 2019, in fp32 whatever the input dtype (DeepSeek-V3 §3.3.1)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xw = wide(x)
        rms = torch.sqrt(xw.square().mean(dim=-1, keepdim=True) + self.eps)
        return (xw / rms * wide(self.weight)).to(x.dtype)


def rotary_angles(dim: int, max_len: int, theta: float) -> torch.Tensor:
    """[max_len, dim/2] angles p * theta^(-2i/dim) in float64 (RoFormer eq. 34)."""
    freqs = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    return torch.outer(torch.arange(max_len, dtype=torch.float64), freqs)


def rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotary on interleaved pairs (x[2i], x[2i+1]) as complex numbers, the form of DeepSeek-V3's
    and Llama's reference code. x: [..., T, dim]."""
    t = x.shape[-2]
    xw = wide(x)
    turn = torch.polar(torch.ones_like(angles[:t]), angles[:t])
    turn = turn.to(torch.complex128 if xw.dtype == torch.float64 else torch.complex64)
    pairs = torch.view_as_complex(xw.reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(pairs * turn).flatten(-2).to(x.dtype)


def causal_attention(q, k, v, scale: float, variant: str) -> torch.Tensor:
    """q, k: [B, H, T, dk], v: [B, H, T, dv]."""
    if variant == "eager":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    t = q.shape[-2]
    logits = (q @ k.transpose(-1, -2)) * scale
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    return torch.softmax(logits.masked_fill(future, float("-inf")), dim=-1) @ v


class GQA(nn.Module):
    """Multi-head attention whose n_kv_heads key/value heads are each shared by a group of
    n_heads / n_kv_heads query heads (Ainslie et al. 2023)."""

    def __init__(self, a: ModelArgs):
        super().__init__()
        self.h, self.hkv, self.dh = a.n_heads, a.n_kv_heads, a.d_model // a.n_heads
        self.wq = normal(self.h * self.dh, a.d_model, std=a.init_std)
        self.wk = normal(self.hkv * self.dh, a.d_model, std=a.init_std)
        self.wv = normal(self.hkv * self.dh, a.d_model, std=a.init_std)
        self.wo = normal(a.d_model, self.h * self.dh, std=a.init_std / math.sqrt(2 * a.n_layers))

    def forward(self, x, angles, variant):
        b, t, _ = x.shape
        q = (x @ self.wq.T).view(b, t, self.h, self.dh).transpose(1, 2)
        k = (x @ self.wk.T).view(b, t, self.hkv, self.dh).transpose(1, 2)
        v = (x @ self.wv.T).view(b, t, self.hkv, self.dh).transpose(1, 2)
        kv_head = torch.arange(self.h) // (self.h // self.hkv)  # query head -> its key/value head
        q, k, v = rotate(q, angles), rotate(k, angles)[:, kv_head], v[:, kv_head]
        y = causal_attention(q, k, v, 1.0 / math.sqrt(self.dh), variant)
        return y.transpose(1, 2).reshape(b, t, self.h * self.dh) @ self.wo.T


class MLA(nn.Module):
    """Multi-head latent attention, DeepSeek-V2 §2.1 eq. 9-19: keys and values are
    up-projections of one compressed latent c_kv (RMSNorm'ed, as in the released models);
    queries optionally of their own latent c_q. Position enters only through a decoupled rotary
    part: per head for the queries (eq. 15), one key shared by all heads (eq. 16). The attention
    logit is the sum of the content term and the rotary term, scaled by 1/sqrt(d_nope + d_rope)."""

    def __init__(self, a: ModelArgs):
        super().__init__()
        self.h, self.dn, self.dr, self.dv, self.c = (a.n_heads, a.qk_nope_head_dim, a.qk_rope_head_dim,
                                                     a.v_head_dim, a.kv_lora_rank)
        q_out = self.h * (self.dn + self.dr)
        if a.q_lora_rank == 0:
            self.wq = normal(q_out, a.d_model, std=a.init_std)
        else:
            self.wq_a = normal(a.q_lora_rank, a.d_model, std=a.init_std)
            self.q_norm = RMSNorm(a.q_lora_rank, a.norm_eps)
            self.wq_b = normal(q_out, a.q_lora_rank, std=a.init_std)
        self.wkv_a = normal(self.c + self.dr, a.d_model, std=a.init_std)  # [W^DKV; W^KR]
        self.kv_norm = RMSNorm(self.c, a.norm_eps)
        self.wkv_b = normal(self.h * (self.dn + self.dv), self.c, std=a.init_std)  # [W^UK; W^UV] per head
        self.wo = normal(a.d_model, self.h * self.dv, std=a.init_std / math.sqrt(2 * a.n_layers))

    def forward(self, x, angles, variant):
        b, t, _ = x.shape
        q = x @ self.wq.T if hasattr(self, "wq") else self.q_norm(x @ self.wq_a.T) @ self.wq_b.T
        q = q.view(b, t, self.h, self.dn + self.dr).transpose(1, 2)
        q_content, q_rot = q[..., :self.dn], rotate(q[..., self.dn:], angles)

        down = x @ self.wkv_a.T
        c_kv, k_rot = self.kv_norm(down[..., :self.c]), rotate(down[..., None, :, self.c:], angles)  # [B, 1, T, dr]
        kv = (c_kv @ self.wkv_b.T).view(b, t, self.h, self.dn + self.dv).transpose(1, 2)
        k_content, v = kv[..., :self.dn], kv[..., self.dn:]

        scale = 1.0 / math.sqrt(self.dn + self.dr)
        if variant == "eager":  # one SDPA over [content; rotary], the shared rotary key broadcast
            y = causal_attention(torch.cat([q_content, q_rot], -1),
                                 torch.cat([k_content, k_rot.expand(b, self.h, t, self.dr)], -1), v, scale, variant)
        else:  # eq. 17 as two dot products: q^C . k^C + q^R . k^R
            logits = (q_content @ k_content.transpose(-1, -2) + q_rot @ k_rot.transpose(-1, -2)) * scale
            future = torch.ones(t, t, dtype=torch.bool).triu(1)
            y = torch.softmax(logits.masked_fill(future, float("-inf")), dim=-1) @ v
        return y.transpose(1, 2).reshape(b, t, self.h * self.dv) @ self.wo.T


def swiglu(x, w1, w3, w2):
    """Shazeer 2020: (silu(x W1^T) * x W3^T) W2^T."""
    return (F.silu(x @ w1.T) * (x @ w3.T)) @ w2.T


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, a: ModelArgs):
        super().__init__()
        self.w1 = normal(hidden, dim, std=a.init_std)
        self.w3 = normal(hidden, dim, std=a.init_std)
        self.w2 = normal(dim, hidden, std=a.init_std / math.sqrt(2 * a.n_layers))

    def forward(self, x):
        return swiglu(x, self.w1, self.w3, self.w2)


class Router(nn.Module):
    """DeepSeek-V3 §2.1.2 eq. 13-16: affinities s = sigmoid(u W^T) in fp32; the top-k of s + b
    choose the experts (b: a per-expert bias moved by the aux-loss-free rule, a buffer, never in
    the gates); the gates are the chosen s normalised to sum 1, times route_scale. Node/group
    limit (V3 §2.1.2, V2 §2.1.3): a group scores the sum of its two best biased affinities and a
    token chooses only inside its n_limited_groups best groups."""

    def __init__(self, a: ModelArgs):
        super().__init__()
        self.k, self.groups, self.keep_groups, self.scale = (a.n_activated_experts, a.n_expert_groups,
                                                             a.n_limited_groups, a.route_scale)
        self.weight = normal(a.n_routed_experts, a.d_model, std=a.init_std)
        self.register_buffer("bias", torch.zeros(a.n_routed_experts))
        # With track_margin, the smallest gap at a selection boundary seen: near-ties would make a
        # comparison with another implementation fragile. Off by default (it costs a sort and a sync).
        self.track_margin, self.min_margin = False, math.inf

    def forward(self, u: torch.Tensor):
        n, e = u.shape[0], self.weight.shape[0]
        s = torch.sigmoid(wide(u) @ wide(self.weight).T)  # [N, E]
        choice = s.detach() + self.bias.to(s.dtype)
        if self.groups > 1:
            per_group = choice.view(n, self.groups, e // self.groups)
            group_score = per_group.topk(min(2, e // self.groups), dim=-1).values.sum(-1)  # [N, G]
            if self.track_margin and self.keep_groups < self.groups:
                ranked = group_score.sort(dim=-1, descending=True).values
                self._margin(ranked[:, self.keep_groups - 1] - ranked[:, self.keep_groups])
            kept = torch.zeros_like(group_score, dtype=torch.bool)
            kept.scatter_(1, group_score.topk(self.keep_groups, dim=-1).indices, True)
            choice = per_group.masked_fill(~kept[..., None], float("-inf")).view(n, e)
        if self.track_margin and self.k < e:
            ranked = choice.sort(dim=-1, descending=True).values
            self._margin(ranked[:, self.k - 1] - ranked[:, self.k])
        ids = choice.topk(self.k, dim=-1).indices  # [N, k]
        chosen = s.gather(1, ids)
        gates = chosen / chosen.sum(-1, keepdim=True) * self.scale
        return ids, gates, s

    def _margin(self, gaps: torch.Tensor):
        finite = gaps[torch.isfinite(gaps)]
        if finite.numel():
            self.min_margin = min(self.min_margin, finite.min().item())


def sequence_balance_loss(s: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """DeepSeek-V3 eq. 17-20 for each sequence, averaged over the batch: sum_i f_i P_i with
    f_i = E / (k T) * #tokens choosing expert i (no gradient) and P_i = mean over tokens of
    s_i / sum_j s_j. s: [B, T, E], ids: [B, T, k]. "Choosing" is the routing actually used
    (bias and group limit included), as the C++ model does; eq. 18 literally writes
    TopK(s), the unbiased affinities."""
    b, t, e = s.shape
    k = ids.shape[-1]
    counts = F.one_hot(ids, e).sum(dim=(1, 2)).to(s.dtype)  # [B, E]
    f = counts * e / (k * t)
    p = (s / s.sum(-1, keepdim=True)).mean(dim=1)
    return (f * p).sum(-1).mean()


class MoE(nn.Module):
    """DeepSeekMoE (V3 §2.1.2 eq. 12): shared experts on every token plus the gated top-k routed
    experts. Routed experts are stored stacked, [E, hidden, d] / [E, d, hidden]."""

    def __init__(self, a: ModelArgs):
        super().__init__()
        e, d, h = a.n_routed_experts, a.d_model, a.moe_intermediate_size
        self.router = Router(a)
        self.w1 = normal(e, h, d, std=a.init_std)
        self.w3 = normal(e, h, d, std=a.init_std)
        self.w2 = normal(e, d, h, std=a.init_std / math.sqrt(2 * a.n_layers))
        if a.n_shared_experts > 0:
            self.shared = SwiGLU(d, a.n_shared_experts * h, a)

    def forward(self, x, variant, stats: list | None):
        b, t, d = x.shape
        u = x.reshape(b * t, d)
        ids, gates, s = self.router(u)
        y = torch.zeros_like(u)
        for e in range(self.w1.shape[0]):
            if variant == "eager":  # DeepSeek-V3 inference/model.py: only the tokens routed to e
                token, slot = torch.where(ids == e)
                if token.numel():  # .to: under autocast the expert's output is bf16, y is not
                    y = y.index_add(0, token, (swiglu(u[token], self.w1[e], self.w3[e], self.w2[e])
                                               * gates[token, slot, None]).to(y.dtype))
            else:  # every token through expert e, weighted by its gate for e (0 when not chosen)
                gate_e = (gates * (ids == e)).sum(-1, keepdim=True)
                y = y + gate_e * swiglu(u, self.w1[e], self.w3[e], self.w2[e])
        if hasattr(self, "shared"):
            y = y + self.shared(u)
        if stats is not None:
            stats.append({"load": torch.bincount(ids.flatten(), minlength=self.w1.shape[0]),
                          "balance": sequence_balance_loss(s.view(b, t, -1), ids.view(b, t, -1))})
        return y.view(b, t, d)


class Block(nn.Module):
    """Pre-norm: x + attn(norm(x)), then h + ffn(norm(h))."""

    def __init__(self, a: ModelArgs, moe: bool):
        super().__init__()
        self.attn_norm = RMSNorm(a.d_model, a.norm_eps)
        self.attn = MLA(a) if a.attention == "mla" else GQA(a)
        self.mlp_norm = RMSNorm(a.d_model, a.norm_eps)
        if moe:
            self.moe = MoE(a)
        else:
            self.mlp = SwiGLU(a.d_model, a.intermediate_size, a)

    def forward(self, x, angles, variant, stats):
        h = x + self.attn(self.attn_norm(x), angles, variant)
        f = self.mlp_norm(h)
        return h + (self.moe(f, variant, stats) if hasattr(self, "moe") else self.mlp(f))


class MTPModule(nn.Module):
    """DeepSeek-V3 §2.2 eq. 21-22: h'_i = M [RMSNorm(h_i); RMSNorm(Emb(t_{i+k}))], then one
    transformer block. Embedding and output head are the main model's."""

    def __init__(self, a: ModelArgs):
        super().__init__()
        self.h_norm = RMSNorm(a.d_model, a.norm_eps)
        self.e_norm = RMSNorm(a.d_model, a.norm_eps)
        self.proj = normal(a.d_model, 2 * a.d_model, std=a.init_std)
        self.block = Block(a, moe=a.n_routed_experts > 0)

    def forward(self, h, next_embed, angles, variant, stats):
        merged = torch.cat([self.h_norm(h), self.e_norm(next_embed)], dim=-1) @ self.proj.T
        return self.block(merged, angles, variant, stats)


class Transformer(nn.Module):
    def __init__(self, a: ModelArgs, variant: str = "reference"):
        super().__init__()
        assert variant in ("reference", "eager")
        self.args, self.variant = a, variant
        self.tok_embed = normal(a.vocab_size, a.d_model, std=a.init_std)
        self.blocks = nn.ModuleList(
            Block(a, moe=a.n_routed_experts > 0 and i >= a.n_dense_layers) for i in range(a.n_layers))
        self.final_norm = RMSNorm(a.d_model, a.norm_eps)
        if not a.tie_embeddings:
            self.head = normal(a.vocab_size, a.d_model, std=a.init_std)
        self.mtp = nn.ModuleList(MTPModule(a) for _ in range(a.mtp_depth))
        rope_dim = a.qk_rope_head_dim if a.attention == "mla" else a.d_model // a.n_heads
        self.angles = rotary_angles(rope_dim, a.max_seq_len, a.rope_theta)  # not a buffer: not exchanged

    def logits(self, h):
        head = self.tok_embed if self.args.tie_embeddings else self.head
        return wide(self.final_norm(h) @ head.T)

    def losses(self, tokens, targets, mtp_lambda: float = 0.3, balance_alpha: float = 0.0):
        """Returns {total, main, mtp, balance, loads}. V3 eq. 25: L = L_main + lambda * mean_k L_MTP^k,
        plus alpha * the balance loss summed over MoE layers (eq. 17)."""
        stats: list = []
        h = F.embedding(tokens, self.tok_embed)
        for block in self.blocks:
            h = block(h, self.angles, self.variant, stats)
        main = F.cross_entropy(self.logits(h).flatten(0, 1), targets.flatten())
        out = {"main": main, "total": main}
        # Depth k predicts t_{i+k+1} at position i from h^{k-1}_i and Emb(t_{i+k}) (eq. 21-24):
        # tokens[:, k:] are the t_{i+k}, targets[:, k:] the t_{i+k+1}, for i < T - k. Eq. 24
        # divides by T; like the C++ model we take the mean over the T - k predicted positions.
        t = tokens.shape[1]
        depth_losses = []
        for k, module in enumerate(self.mtp, start=1):
            h = module(h[:, :t - k], F.embedding(tokens[:, k:], self.tok_embed), self.angles, self.variant, stats)
            depth_losses.append(F.cross_entropy(self.logits(h).flatten(0, 1), targets[:, k:].flatten()))
        if depth_losses:
            out["mtp"] = torch.stack(depth_losses).mean()
            out["total"] = out["total"] + mtp_lambda * out["mtp"]
        if stats:
            out["balance"] = torch.stack([st["balance"] for st in stats]).sum()
            if balance_alpha > 0:
                out["total"] = out["total"] + balance_alpha * out["balance"]
        out["loads"] = [st["load"] for st in stats]
        return out

    def routers(self) -> list[Router]:
        return [m for m in self.modules() if isinstance(m, Router)]
