"""An α–β cost model of distributed training: step time, memory and traffic per device.

A message of n bytes over a link costs α + n/β (latency α, bandwidth β per direction). A
ring over g devices moves each device's share 2(g − 1) times for an all-reduce and g − 1
times for a reduce-scatter or an all-gather:

    T_allreduce(n, g) = 2(g − 1)(α + n/(gβ)),   T_rs(n, g) = T_ag(n, g) = (g − 1)(α + n/(gβ)).

A step of a model with P parameters on tokens D, split DP × TP × PP = d·t·p devices, costs

    compute   (6 or 8)·P·D / (d·t·p) / (peak · e)      8 with activation recomputation
    bubble    compute · (p − 1)/m                       m micro-batches per pipeline
    TP        (4, or 6 with recomputation) all-reduces of b·s·h·2 bytes per layer and micro-batch
    DP        an all-reduce (ZeRO-3: 1.5×) of the 2·P/(t·p) gradient bytes; with bucketed
              overlap only the part longer than the backward pass is exposed

with e the fraction of peak one device reaches on the model's matrix products alone (taken
from a single-device measurement), and model states 16 bytes per parameter in mixed-precision
Adam, divided by ZeRO as the chapter derives (Rajbhandari et al. 2020); activations per layer
s·b·h·(34 + 5·a·s/h)/t bytes (Korthikanti et al. 2022), 2·s·b·h with full recomputation.

Hardware figures are the vendors' data sheets: V100 SXM 125 TFLOP/s fp16 tensor, NVLink/
NVSwitch 300 GB/s per GPU (both directions); A100 SXM 312 TFLOP/s bf16, NVLink 3 600 GB/s;
H100 SXM 989 TFLOP/s bf16 dense, NVLink 4 900 GB/s; InfiniBand 100 (EDR), 200 (HDR),
400 (NDR) Gb/s per adapter. Latencies α are assumptions (stated in the chapter).
Chapter: stage 13 (DP × TP × PP at scale).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["Device", "Cluster", "ModelShape", "Layout", "CLUSTERS", "MODELS", "ring_all_reduce_s",
           "step_cost", "parallel_efficiency", "published_reproductions", "scaling_limit"]


@dataclass(frozen=True)
class Device:
    name: str
    peak_flops: float        # dense fp16/bf16 tensor FLOP/s
    memory_bytes: float


@dataclass(frozen=True)
class Cluster:
    device: Device
    gpus_per_node: int
    intra_bw: float          # bytes/s per GPU per direction inside a node
    inter_bw_node: float     # bytes/s per node per direction (all adapters)
    intra_alpha: float = 10e-6
    inter_alpha: float = 20e-6

    @property
    def inter_bw(self) -> float:
        """Inter-node bandwidth per GPU when every GPU of a node talks at once."""
        return self.inter_bw_node / self.gpus_per_node


V100 = Device("V100-SXM 32GB", 125e12, 32e9)
A100 = Device("A100-SXM 80GB", 312e12, 80e9)
H100 = Device("H100-SXM 80GB", 989e12, 80e9)
CLUSTERS = {
    # DGX-2H: 16 V100 on NVSwitch (300 GB/s per GPU, 150 each way), 8 × 100 Gb/s InfiniBand
    "dgx2h-v100": Cluster(V100, 16, 150e9, 8 * 12.5e9),
    # DGX A100: 8 A100 on NVLink 3 (600 GB/s, 300 each way), 8 × 200 Gb/s HDR
    "dgx-a100": Cluster(A100, 8, 300e9, 8 * 25e9),
    # DGX H100: 8 H100 on NVLink 4 (900 GB/s, 450 each way), 8 × 400 Gb/s NDR
    "dgx-h100": Cluster(H100, 8, 450e9, 8 * 50e9),
}


@dataclass(frozen=True)
class ModelShape:
    name: str
    n_params: float
    n_layers: int
    d_model: int
    n_heads: int
    seq_len: int


MODELS = {
    "gpt2-124m": ModelShape("GPT-2 124M", 124e6, 12, 768, 12, 1024),
    "llama-7b": ModelShape("7B (Llama-style)", 6.7e9, 32, 4096, 32, 4096),
    "megatron-8.3b": ModelShape("Megatron-LM 8.3B", 8.3e9, 72, 3072, 32, 1024),
    "megatron-1t": ModelShape("Megatron-LM 1T", 1.0e12, 128, 25600, 160, 2048),
}


@dataclass(frozen=True)
class Layout:
    dp: int = 1
    tp: int = 1
    pp: int = 1
    micro_batch: int = 1      # sequences per micro-batch
    zero: int = 0
    recompute: bool = False
    overlap: bool = True      # DP all-reduce in buckets behind the backward pass

    @property
    def n_devices(self) -> int:
        return self.dp * self.tp * self.pp


def ring_all_reduce_s(nbytes: float, g: int, bw: float, alpha: float) -> float:
    """2(g − 1)(α + n/(gβ)): the ring all-reduce's time."""
    return 0.0 if g <= 1 else 2 * (g - 1) * (alpha + nbytes / (g * bw))


def _link(c: Cluster, span: int) -> tuple[float, float]:
    """(bandwidth, α) of a group whose members are ``span`` consecutive devices apart."""
    return (c.intra_bw, c.intra_alpha) if span <= c.gpus_per_node else (c.inter_bw,
                                                                        c.inter_alpha)


def step_cost(m: ModelShape, c: Cluster, lay: Layout, global_batch: int,
              efficiency: float) -> dict[str, float]:
    """Seconds per step by part, bytes per device, and throughput, for one layout."""
    d, t, p = lay.dp, lay.tp, lay.pp
    tokens = global_batch * m.seq_len
    n_micro = global_batch / (d * lay.micro_batch)  # micro-batches per pipeline per step
    flops = (8 if lay.recompute else 6) * m.n_params * tokens / lay.n_devices
    compute = flops / (c.device.peak_flops * efficiency)
    bubble = compute * (p - 1) / n_micro if p > 1 else 0.0
    act_bytes = lay.micro_batch * m.seq_len * m.d_model * 2  # one fp16 activation tensor
    bw, alpha = _link(c, t)
    per_layer = (6 if lay.recompute else 4) * ring_all_reduce_s(act_bytes, t, bw, alpha)
    tp_s = per_layer * (m.n_layers / p) * n_micro
    grad_bytes = 2 * m.n_params / (t * p)
    bw, alpha = _link(c, d * t * p if d > 1 else 1)
    dp_s = ring_all_reduce_s(grad_bytes, d, bw, alpha) * (1.5 if lay.zero == 3 else 1.0)
    pp_bw, pp_alpha = _link(c, t * p)
    pp_s = 2 * (pp_alpha + act_bytes / pp_bw) * (n_micro + p - 1) if p > 1 else 0.0
    backward = compute * ((3 / 4) if lay.recompute else (2 / 3))
    exposed_dp = max(dp_s - backward, 0.0) if lay.overlap else dp_s
    total = compute + bubble + tp_s + exposed_dp + pp_s
    psi = m.n_params / (t * p)
    states = {0: 16 * psi, 1: 4 * psi + 12 * psi / d, 2: 2 * psi + 14 * psi / d,
              3: 16 * psi / d}[lay.zero]
    per_layer_act = (2 * m.seq_len * lay.micro_batch * m.d_model if lay.recompute else
                     m.seq_len * lay.micro_batch * m.d_model
                     * (34 + 5 * m.n_heads * m.seq_len / m.d_model) / t)
    activations = per_layer_act * (m.n_layers / p) * min(p, n_micro)  # 1F1B: ≤ p in flight
    return {"compute_s": compute, "bubble_s": bubble, "tp_s": tp_s, "dp_s": exposed_dp,
            "pp_s": pp_s, "step_s": total, "tokens_per_s": tokens / total,
            "flops_per_device_s": (6 * m.n_params * tokens / lay.n_devices) / total,
            "model_state_bytes": states, "activation_bytes": activations,
            "memory_bytes": states + activations,
            "fits": float(states + activations <= c.device.memory_bytes),
            "feasible": float(n_micro >= 1 and t <= m.n_heads and p <= m.n_layers)}


def parallel_efficiency(m: ModelShape, c: Cluster, lay: Layout, global_batch: int,
                        efficiency: float) -> float:
    """Throughput per device relative to one device doing the whole step alone."""
    one = step_cost(m, c, replace(lay, dp=1, tp=1, pp=1, zero=0), global_batch, efficiency)
    many = step_cost(m, c, lay, global_batch, efficiency)
    return one["step_s"] / (lay.n_devices * many["step_s"])


def published_reproductions() -> list[dict[str, float | str]]:
    """Shoeybi et al. (2019), Megatron-LM, weak scaling on DGX-2H (V100): one GPU sustains
    39 TFLOP/s on a 1.2B model (e = 39/125); 8-way tensor parallel 8.3B (batch 8) keeps 77 %
    of that per GPU; 512 GPUs (8-way TP × 64-way DP, batch 512) sustain 15.1 PFLOP/s, 76 %."""
    m, c, e = MODELS["megatron-8.3b"], CLUSTERS["dgx2h-v100"], 39 / 125
    rows: list[dict[str, float | str]] = []
    for label, lay, batch, published in (
            ("8-way TP, 8 GPUs", Layout(tp=8, micro_batch=8, recompute=True), 8, 0.77),
            ("8 TP x 64 DP, 512 GPUs", Layout(tp=8, dp=64, micro_batch=8, recompute=True),
             512, 15.1e15 / 512 / 39e12)):
        r = step_cost(m, c, lay, batch, e)
        predicted = r["compute_s"] / r["step_s"]  # per-GPU rate relative to the 1-GPU 39 TF
        rows.append({"measurement": label, "published": published, "predicted": predicted,
                     "relative_error": (predicted - published) / published})
    return rows


def scaling_limit(m: ModelShape, c: Cluster, kind: str, global_batch: int, efficiency: float,
                  max_devices: int = 4096, threshold: float = 0.5) -> dict[str, object]:
    """Parallel efficiency of one strategy (dp, zero3, tp, pp) at N = 1, 2, 4, ..., and the
    largest N that is feasible, fits in memory and keeps ``threshold`` efficiency."""
    curve, limit, why = [], 1, "scales to the largest N tried"
    n = 1
    while n <= max_devices:
        # one sequence per micro-batch, activations recomputed: the memory-lean setting
        if kind in ("dp", "zero3"):
            lay = Layout(dp=n, zero=3 if kind == "zero3" else 0, recompute=True)
        elif kind == "tp":
            lay = Layout(tp=n, recompute=True)
        elif kind == "pp":
            lay = Layout(pp=n, recompute=True)
        else:
            raise ValueError(f"kind must be dp, zero3, tp or pp, got {kind!r}")
        r = step_cost(m, c, lay, global_batch, efficiency)
        eff = parallel_efficiency(m, c, lay, global_batch, efficiency)
        ok = bool(r["feasible"]) and global_batch >= lay.dp
        curve.append({"n": n, "efficiency": eff, "fits": bool(r["fits"]), "feasible": ok,
                      "memory_gb": r["memory_bytes"] / 1e9})
        if ok and r["fits"] and eff >= threshold:
            limit = n
        n *= 2
    last = {p["n"]: p for p in curve}
    nxt = last.get(limit * 2)
    if nxt is not None:
        why = ("infeasible (batch, heads or layers run out)" if not nxt["feasible"] else
               "efficiency falls below threshold" if nxt["efficiency"] < threshold else
               "does not fit in memory")
    if not any(p["fits"] for p in curve):
        limit, why = 0, "never fits in one device's memory"
    return {"kind": kind, "curve": curve, "limit": limit, "why": why}
