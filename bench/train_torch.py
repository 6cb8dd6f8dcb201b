#!/usr/bin/python3
"""bench/train_torch.py - the PyTorch side of bench/torch.sh: a plain Llama in fp32 with the shape
of a Hugging Face config.json, trained on random tokens for speed only (the weights are random).

Per step: forward, cross-entropy (train) or tau^2 KL(teacher || student) + alpha CE with a no-grad
teacher forward (distill), backward, global grad-norm clip, AdamW - the work of one
`slmc train` / `slmc distill` step with its defaults. One warm-up step, then --steps timed steps.
Prints "torch VERSION", "libs ..." (the BLAS and malloc libraries mapped), "params N",
"teacher_params N" (distill) and "tokens_per_s X". Needs only torch.
Run it with Debian's /usr/bin/python3 (python3-torch)."""
import argparse, json, math, time
import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):  # the Hugging Face Llama rotation: (x1, x2) -> (-x2, x1) over the two halves
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, self.nh, self.nkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = c.get("head_dim") or d // self.nh
        self.attn_norm, self.ffn_norm = RMSNorm(d, c["rms_norm_eps"]), RMSNorm(d, c["rms_norm_eps"])
        lin = lambda i, o: nn.Linear(i, o, bias=False)
        qd, kvd, f = self.nh * self.hd, self.nkv * self.hd, c["intermediate_size"]
        self.q, self.k, self.v, self.o = lin(d, qd), lin(d, kvd), lin(d, kvd), lin(qd, d)
        self.gate, self.up, self.down = lin(d, f), lin(d, f), lin(f, d)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        h = self.attn_norm(x)
        q = self.q(h).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k(h).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v(h).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv  # GQA: each kv head serves rep consecutive query heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hd))
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(B, T, self.nh * self.hd))
        h = self.ffn_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, V = c["hidden_size"], c["vocab_size"]
        self.embed = nn.Embedding(V, d)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(d, c["rms_norm_eps"])
        self.head = None if c.get("tie_word_embeddings", False) else nn.Linear(d, V, bias=False)
        hd = self.blocks[0].hd
        self.theta = c.get("rope_theta", 10000.0)
        self.inv_freq = 1.0 / (self.theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        for p in self.parameters():  # random init, speed only
            if p.dim() == 2:
                nn.init.normal_(p, std=c.get("initializer_range", 0.02))

    def forward(self, ids):
        T = ids.shape[1]
        freqs = torch.outer(torch.arange(T, dtype=torch.float32), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        x = self.embed(ids)
        for b in self.blocks:
            x = b(x, cos, sin, mask)
        x = self.norm(x)
        return x @ self.embed.weight.t() if self.head is None else self.head(x)


def loaded_libs():  # which BLAS (reference libblas3 or OpenBLAS) and malloc this process runs on
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        return "unknown"
    keep = {"/".join(p.split("/")[-2:]) for p in paths if any(k in p for k in ("libblas", "malloc"))}
    return " ".join(sorted(keep)) or "none"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="a Hugging Face config.json (the student's shape)")
    ap.add_argument("--mode", choices=["train", "distill"], default="train")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps, after one warm-up step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    with open(a.config) as f:
        cfg = json.load(f)
    print("torch", torch.__version__, "threads", torch.get_num_threads())
    print("libs", loaded_libs())
    model = Llama(cfg)
    print("params", sum(p.numel() for p in model.parameters()))
    teacher = None
    if a.mode == "distill":  # the same shape as teacher, as `slmc distill --teacher M --student M`
        teacher = Llama(cfg).eval().requires_grad_(False)
        print("teacher_params", sum(p.numel() for p in teacher.parameters()))
    # slmc decays the matrices (embeddings and head too), not the norms
    groups = [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": a.weight_decay},
              {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    V, tau = cfg["vocab_size"], a.temperature

    def step():
        ids = torch.randint(0, V, (a.batch, a.seq_len + 1))
        x, y = ids[:, :-1], ids[:, 1:].reshape(-1)
        logits = model(x).reshape(-1, V)
        loss = F.cross_entropy(logits, y)
        if teacher is not None:
            with torch.no_grad():
                t_logp = F.log_softmax(teacher(x).reshape(-1, V) / tau, dim=-1)
            kl = F.kl_div(F.log_softmax(logits / tau, dim=-1), t_logp, log_target=True, reduction="batchmean")
            loss = tau * tau * kl + a.alpha * loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        return loss.item()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    sec = time.perf_counter() - t0
    print("loss %.4f" % loss)
    print("tokens_per_s %.2f" % (a.batch * a.seq_len * a.steps / sec))


if __name__ == "__main__":
    main()
